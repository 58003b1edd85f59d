"""The project's own errors: problems the user can fix, reported in one line.

Every error that means "your configuration, your input or the state of the data store is
wrong, and here is what to do" derives from :class:`UserError`.  ``kedro run`` (the project's
``run`` command in :mod:`ups_kedro.cli`) ends such a run with the message alone and exit code 1;
anything else is a bug and keeps its full traceback.  This module imports nothing, so training
and model code may raise these errors without depending on Kedro or MLflow.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user fixes (config, input file, lineage, missing upstream): one line."""


class LineageError(UserError, ValueError):
    """Artifacts in the store do not belong together (another encoder, another data set)."""


class MissingUpstreamError(UserError, FileNotFoundError):
    """An input another pipeline produces does not exist yet."""


class CorruptArtifactError(UserError, ValueError):
    """A file in the store exists but cannot be read (truncated, not ours)."""


class InputFileError(UserError, ValueError):
    """A file the user gave (initial condition, coefficients) does not fit what is asked of it."""
