"""Deferred saves: a dataset writes to a staged copy that a transaction commits or discards.

``data_processing`` writes several artifacts that describe one data set (the raw-source
record, the split manifest, the prepared fields, the normaliser).  They must change together:
a file rejected half-way (NaN in one trajectory, found while the fields stream to disk) must
leave every one of them as it was.  :class:`~ups_kedro.data_integrity.DataTransactionHooks`
switches those datasets to deferred mode for the run: saves go to a hidden staged path beside
the target (same filesystem, so the final rename is atomic), loads in the same run read the
staged copy, and the whole group is renamed into place only once all of its nodes succeeded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class Deferrable:
    """Mixin for local datasets with a ``_filepath``: stage, then commit or discard."""

    _filepath: os.PathLike[str] | str
    _staged: Path | None = None

    def _final(self) -> Path:
        return Path(self._filepath)

    def defer(self, token: str) -> None:
        """From now on, save to ``.<name>.staged-<token>`` beside the target."""
        final = self._final()
        self._staged = final.parent / f".{final.name}.staged-{token}"

    @property
    def deferred(self) -> bool:
        return self._staged is not None

    def _write_path(self) -> Path:
        return self._staged if self._staged is not None else self._final()

    def _read_path(self) -> Path:
        """The staged copy once one was saved in this run, else the committed one."""
        if self._staged is not None and self._staged.exists():
            return self._staged
        return self._final()

    def commit(self) -> bool:
        """Move the staged copy into place (atomic rename); ``False`` when nothing was staged."""
        staged, self._staged = self._staged, None
        if staged is None or not staged.exists():
            return False
        final = self._final()
        final.parent.mkdir(parents=True, exist_ok=True)
        if staged.is_dir() and final.exists():
            # A folder cannot replace a non-empty folder: move the old one aside first, so an
            # interruption leaves either version at ``final`` (as atomic_dir does).
            aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old",
                                          dir=final.parent))
            os.replace(final, aside / final.name)
            os.replace(staged, final)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(staged, final)
        return True

    def discard(self) -> None:
        """Delete the staged copy: the committed artifact stays as it was."""
        staged, self._staged = self._staged, None
        if staged is None or not staged.exists():
            return
        if staged.is_dir():
            shutil.rmtree(staged, ignore_errors=True)
        else:
            staged.unlink(missing_ok=True)


def producer_hint(dataset: object, verb: str = "run") -> str:
    """``run `kedro run --pipeline <producer>` first``: the registered pipeline that produces
    ``dataset`` (set by ``DataTransactionHooks`` for the inputs of a run), else a generic hint."""
    producer = getattr(dataset, "_ups_producer", None)
    if producer:
        return f"{verb} `kedro run --pipeline {producer}` first"
    return f"{verb} the pipeline that produces it first"
