"""Stage fingerprints and the per-stage status file (no Kedro, no MLflow).

A training stage is *up to date* when its last run finished with the fingerprint it would have
now.  The fingerprint is the sha256 of its **components**:

* ``params``: the resolved parameter block (defaults filled in, the seed resolved), minus the
  keys that cannot change the trained weights (:data:`NOT_IN_FINGERPRINT`);
* ``inputs``: one fingerprint per input (:func:`input_fingerprint`): a checkpoint's lineage
  (which carries the id of the training that produced it), an array bundle's metadata (split
  manifest, source fingerprint, encoder hash, shape), a plain mapping's content;
* ``code``: the package version and a hash of the package's source files (a git commit would
  also change with a README edit, and miss uncommitted edits);
* ``seed``.

The components are kept beside the fingerprint so that a mismatch can be explained
(:func:`explain`: "params train.epochs: 2 → 3", "input latents_train changed").

The status file ``<state_dir>/status.json`` sits next to the resumable ``last.pt`` and the
stage lock (``.lock``, :mod:`~ups_kedro.training.lock`); together they are one mechanism: the
status says what the last run of the stage was (running / finished / failed, epochs done,
times, MLflow run id, where the checkpoint was published), the lock says whether that run is
still alive.  A status ``running`` whose lock is free is a run that was killed
(:func:`effective_state`): its ``last.pt`` resumes at the last completed epoch.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ups_kedro.atomic import atomic_file
from ups_kedro.config import to_dict
from ups_kedro.processes import process_alive
from ups_kedro.training.lock import LOCK_NAME

logger = logging.getLogger(__name__)

STATUS_NAME = "status.json"
STATUS_FORMAT = 1
RUNNING, FINISHED, FAILED, KILLED = "running", "finished", "failed", "killed"
#: Top-level parameter keys that never change a stage's trained weights (evaluation, where the
#: state lives, thread counts, the batch size of encoding latents after training).
NOT_IN_FINGERPRINT = ("force", "eval", "state_dir", "torch_threads", "encode_batch_size")
#: Keys of ``train`` that only change speed, display or warnings (as the resume fingerprint).
TRAIN_NOT_IN_FINGERPRINT = ("progress", "num_threads", "grad_health", "divergence",
                            "distributed")
_CODE_VERSION: str | None = None


class StatusFileError(ValueError):
    """A status file that cannot be trusted (unreadable, edited, another format)."""


@dataclass
class StageStatus:
    """What ``<state_dir>/status.json`` holds (see the module docstring)."""

    stage: str
    fingerprint: str
    state: str
    components: dict[str, Any]
    epochs_done: int = 0
    started: str | None = None
    finished: str | None = None
    run_id: str | None = None
    pid: int | None = None
    host: str | None = None
    checkpoint: str | None = None        # where the finished run's checkpoint was published
    checkpoint_id: str | None = None     # lineage.training_id of that checkpoint
    final_metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        body = {"format": STATUS_FORMAT, **dataclasses.asdict(self)}
        body["checksum"] = _checksum(body)
        return json.dumps(body, indent=1, sort_keys=True, default=str)


def _checksum(body: Mapping[str, Any]) -> str:
    """sha256 of the status without its checksum: a hand edit is detected, not trusted."""
    plain = {k: v for k, v in body.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def status_path(state_dir: Path) -> Path:
    return Path(state_dir) / STATUS_NAME


def read_status(state_dir: Path) -> StageStatus | None:
    """The stage's status (``None``: never run here).

    Raises:
        StatusFileError: the file is not valid JSON, another format, or was edited by hand
            (its checksum does not match); the message names the file.
    """
    path = status_path(state_dir)
    if not path.is_file():
        return None
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise StatusFileError(f"status file {path} is unreadable ({err})") from None
    if not isinstance(body, dict) or body.get("format") != STATUS_FORMAT:
        raise StatusFileError(f"status file {path} has an unknown format")
    if body.get("checksum") != _checksum(body):
        raise StatusFileError(f"status file {path} was edited or corrupted (checksum mismatch)")
    names = {f.name for f in dataclasses.fields(StageStatus)}
    try:
        return StageStatus(**{k: v for k, v in body.items() if k in names})
    except TypeError as err:
        raise StatusFileError(f"status file {path} is incomplete ({err})") from None


def write_status(state_dir: Path, status: StageStatus) -> None:
    """Replace the status file atomically (fsynced: a killed run leaves the old or new one)."""
    with atomic_file(status_path(state_dir)) as tmp:
        with open(tmp, "w") as handle:
            handle.write(status.to_json())
            handle.flush()
            os.fsync(handle.fileno())


def lock_is_held(state_dir: Path) -> bool:
    """A live process holds the stage lock (``.lock``) right now."""
    path = Path(state_dir) / LOCK_NAME
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock if it was taken
    return False


def effective_state(status: StageStatus, state_dir: Path) -> str:
    """``running`` only while its process holds the lock; a dead ``running`` is ``killed``.

    A status written before the lock is taken (the first seconds of a run) counts as running
    while its process (same host) is alive."""
    if status.state != RUNNING:
        return status.state
    if lock_is_held(state_dir):
        return RUNNING
    if status.pid and status.host == os.uname().nodename and _alive(int(status.pid)):
        return RUNNING
    return KILLED


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is starting the stage anew
    return process_alive(pid, None)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --------------------------------------------------------------------------------------------
# fingerprints


def params_component(cfg: Any) -> dict[str, Any]:
    """The resolved parameter block as plain values, without :data:`NOT_IN_FINGERPRINT`."""
    plain = to_dict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    plain = {k: v for k, v in plain.items() if k not in NOT_IN_FINGERPRINT}
    if isinstance(plain.get("train"), dict):
        plain["train"] = {k: v for k, v in plain["train"].items()
                          if k not in TRAIN_NOT_IN_FINGERPRINT}
    return plain


def input_fingerprint(value: Any) -> str:
    """A short identity of one node input (cheap: no weights or arrays are hashed).

    * a checkpoint dict: its ``lineage`` (training id, MLflow run, encoder hash, ...);
    * an array bundle (has ``meta`` and ``array``): its metadata, shape and dtype;
    * ``None``: ``"absent"``; any other value: its JSON content.
    """
    if value is None:
        return "absent"
    if isinstance(value, Mapping) and isinstance(value.get("lineage"), Mapping):
        ident: Any = {"lineage": value["lineage"], "kind": value.get("kind"),
                      "skipped": value.get("skipped")}
    elif hasattr(value, "meta") and hasattr(value, "array"):
        array = value.array
        ident = {"meta": value.meta, "shape": list(getattr(array, "shape", ())),
                 "dtype": str(getattr(array, "dtype", ""))}
    else:
        ident = value
    text = json.dumps(ident, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def code_version() -> str:
    """``<package version>+src.<hash of the package's .py files>`` (computed once)."""
    global _CODE_VERSION  # noqa: PLW0603 - the source does not change within a process
    if _CODE_VERSION is None:
        import ups_kedro

        root = Path(ups_kedro.__file__).resolve().parent
        digest = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
        try:
            from importlib.metadata import version

            pkg = version("ups_kedro")
        except Exception:  # noqa: BLE001 - not installed as a distribution
            pkg = "0"
        _CODE_VERSION = f"{pkg}+src.{digest.hexdigest()[:12]}"
    return _CODE_VERSION


def components(stage: str, cfg: Any, inputs: Mapping[str, Any], seed: int | None) -> dict:
    """The fingerprint components of ``stage`` (see the module docstring)."""
    return {"stage": stage, "params": params_component(cfg),
            "inputs": {name: input_fingerprint(v) for name, v in sorted(inputs.items())},
            "code": code_version(), "seed": seed}


def fingerprint(parts: Mapping[str, Any]) -> str:
    """sha256 (16 hex) of the components."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def explain(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 4) -> str:
    """Why two sets of components differ, e.g. ``params train.epochs: 2 → 3; input
    latents_train changed``."""
    reasons: list[str] = []
    for key, a, b in _diff(old.get("params", {}), new.get("params", {})):
        reasons.append(f"parameter {key}: {a!r} → {b!r}")
    old_in, new_in = old.get("inputs", {}), new.get("inputs", {})
    for name in sorted(set(old_in) | set(new_in)):
        if old_in.get(name) != new_in.get(name):
            reasons.append(f"input {name} changed")
    if old.get("code") != new.get("code"):
        reasons.append(f"code changed ({old.get('code')} → {new.get('code')})")
    if old.get("seed") != new.get("seed"):
        reasons.append(f"seed {old.get('seed')} → {new.get('seed')}")
    if not reasons:
        return "fingerprint changed"
    more = f" (+{len(reasons) - limit} more)" if len(reasons) > limit else ""
    return "; ".join(reasons[:limit]) + more


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


# --------------------------------------------------------------------------------------------
# trainings in progress: their status and per-epoch JSONL log
#
# The node that starts a training registers it here (pipelines.stage_cache); the training
# engine's epoch callback (pipelines.tracking) records each epoch here; the hooks publish or
# fail it.  Both callers import this module and not each other.


@dataclass
class Pending:
    """A training of this process whose checkpoint is not saved yet."""

    state_dir: Path
    status: StageStatus


_pending: dict[str, Pending] = {}   # stage → its training in progress
_log_dir: Path | None = None         # <data_dir>/08_reporting/logs (set by the hooks)
_checked: list[tuple[str, Path]] = []  # (stage, state_dir) of every reuse check, in order


def set_log_dir(path: Path | None) -> None:
    """Where the JSONL logs go (one project per process); forgets trainings in progress."""
    global _log_dir  # noqa: PLW0603 - one project per process
    _log_dir = path
    _pending.clear()
    _checked.clear()


def note_checked(stage: str, state_dir: Path) -> None:
    """A node checked ``stage`` (its state in ``state_dir``): the node ledger links them."""
    _checked.append((stage, Path(state_dir)))


def checked() -> list[tuple[str, Path]]:
    """Every ``(stage, state_dir)`` checked in this process so far, in order."""
    return list(_checked)


def log_dir() -> Path | None:
    return _log_dir


def begin_pending(stage: str, state_dir: Path, status: StageStatus) -> None:
    _pending[stage] = Pending(Path(state_dir), status)


def pending(stage: str | None) -> Pending | None:
    return _pending.get(stage) if stage is not None else None


def pop_pending(stage: str | None) -> Pending | None:
    return _pending.pop(stage, None) if stage is not None else None


def all_pending() -> dict[str, Pending]:
    """A copy: the caller may pop while iterating."""
    return dict(_pending)


def epoch_done(stage: str, epoch: int, metrics: Mapping[str, float], wall: str) -> None:
    """Record the epoch in the status file and append its line to the stage's JSONL log."""
    entry = _pending.get(stage)
    if entry is None:
        return
    status = entry.status
    status.epochs_done = max(status.epochs_done, epoch)
    status.final_metrics = {k: float(v) for k, v in metrics.items()}
    write_status(entry.state_dir, status)
    path = jsonl_path(stage)
    if path is not None:
        append_jsonl(path, {"stage": stage, "training_id": status.checkpoint_id,
                            "run_id": status.run_id, "fingerprint": status.fingerprint,
                            "epoch": epoch, "wall_time": wall, **metrics})


def jsonl_path(stage: str) -> Path | None:
    return None if _log_dir is None else _log_dir / f"{stage.replace('/', '.')}.jsonl"


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append one whole line and fsync it: a killed run leaves complete lines only.

    A line already there for the same training and epoch (a resume replays its epochs) is not
    written twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = (record.get("training_id"), record.get("epoch"))
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                old = json.loads(line)
            except ValueError:
                continue
            if (old.get("training_id"), old.get("epoch")) == key:
                return
    line = json.dumps(dict(record), sort_keys=False, default=float, allow_nan=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write of a whole line (O_APPEND)
        os.fsync(fd)
    finally:
        os.close(fd)
