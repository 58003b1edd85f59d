"""The MLflow run tells the truth about how a ``kedro run`` ended.

kedro-mlflow starts one MLflow run per ``kedro run`` and ends it ``FINISHED`` after the
pipeline or ``FAILED`` from its ``on_pipeline_error`` hook.  Three endings escape it:

* **Ctrl-C (SIGINT)** raises ``KeyboardInterrupt``, which Kedro's runner does not treat as an
  error: no hook runs and MLflow's exit handler ends the run with its default, ``FINISHED``.
* **SIGTERM** (what job schedulers send) ends the process without any handler: ``RUNNING``
  forever.
* **SIGKILL** (or a crash of the interpreter) cannot be caught at all: ``RUNNING`` forever.

:class:`RunStatusHooks` handles them: during the pipeline SIGINT and SIGTERM raise
``KeyboardInterrupt`` after noting the signal, and the run is ended ``KILLED`` with the tag
``ups.end_reason`` (by the project's ``run`` command, or at interpreter exit for programmatic
sessions); every run records its ``ups.host``/``ups.pid``, and the next run on that host closes
any ``RUNNING`` run whose process is gone as ``KILLED``.  A failing run gets its one-line
reason as ``ups.end_reason`` before kedro-mlflow ends it ``FAILED``.

It also makes an unreachable tracking server fail in seconds (a probe with a short timeout
before kedro-mlflow's first request; MLflow's default retries take minutes).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from kedro.framework.hooks import hook_impl

from ups_kedro.error_report import TrackingUnreachableError, one_line, unreachable, user_error
from ups_kedro.processes import process_alive, process_start

# mlflow is imported inside the functions: settings.py imports this module for every `kedro`
# command (`kedro registry list` must not pay for MLflow).

logger = logging.getLogger(__name__)

END_REASON = "ups.end_reason"
KILLED, FAILED = "KILLED", "FAILED"
#: Seconds the reachability probe of an HTTP tracking server may take.
PROBE_TIMEOUT_S = 5.0

_interrupt: str | None = None  # the signal that interrupted the running pipeline
_previous: dict[int, Any] = {}
_atexit_registered = False


# ------------------------------------------------------------------------------------------------
# unreachable tracking server
# ------------------------------------------------------------------------------------------------
def limit_http_retries() -> None:
    """MLflow's HTTP retries (default 7, backoff 2: minutes) → 2, backoff 1, unless set."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def check_tracking_reachable(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise :class:`TrackingUnreachableError` when an ``http(s)`` tracking URI does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # every MLflow server answers /health: something else listens there
            raise TrackingUnreachableError(
                f"{uri} answers but is not an MLflow tracking server (HTTP 404 on /health): "
                "point MLFLOW_TRACKING_URI at the MLflow server (unset it to use the local "
                "mlflow.db)") from exc
        return  # it answered (behind auth, or a transient server error): reachable
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise unreachable(uri, getattr(exc, "reason", exc)) from exc


# ------------------------------------------------------------------------------------------------
# signals
# ------------------------------------------------------------------------------------------------
def interrupt_reason() -> str | None:
    """``"SIGINT"`` / ``"SIGTERM"`` when a signal interrupted the pipeline, else ``None``."""
    return _interrupt


def _on_signal(signum: int, frame: Any) -> None:
    global _interrupt  # noqa: PLW0603 - one process, one pipeline run
    _interrupt = signal.Signals(signum).name
    raise KeyboardInterrupt(_interrupt)


def _install_signal_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        _previous.setdefault(sig, signal.getsignal(sig))
        signal.signal(sig, _on_signal)


def _restore_signal_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, handler in _previous.items():
        signal.signal(sig, handler)
    _previous.clear()


def end_interrupted(reason: str) -> str | None:
    """End the active MLflow run (and its parents) as ``KILLED`` with the reason; its id."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return None
    run_id = run.info.run_id
    try:
        while mlflow.active_run() is not None:
            mlflow.set_tag(END_REASON, f"interrupted by {reason}")
            mlflow.end_run(KILLED)
    except Exception as exc:  # noqa: BLE001 - never mask the interrupt itself
        logger.warning("could not mark MLflow run %s as KILLED: %s", run_id, exc)
    return run_id


def _at_exit() -> None:
    """Fallback for programmatic sessions: runs before MLflow's own exit handler (LIFO)."""
    import mlflow

    if _interrupt is not None and mlflow.active_run() is not None:
        end_interrupted(_interrupt)


# ------------------------------------------------------------------------------------------------
# runs left RUNNING by a killed process
# ------------------------------------------------------------------------------------------------
def close_orphaned_runs(current_run_id: str) -> list[str]:
    """Close ``RUNNING`` runs of this experiment whose process on this host is gone: ``KILLED``."""
    import mlflow

    client = mlflow.MlflowClient()
    experiment_id = mlflow.get_run(current_run_id).info.experiment_id
    host = socket.gethostname()
    runs = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                              max_results=200)
    closed = []
    for run in runs:
        tags = run.data.tags
        if run.info.run_id == current_run_id or tags.get("ups.host") != host:
            continue
        pid = tags.get("ups.pid", "")
        if not pid.isdigit() or process_alive(int(pid), tags.get("ups.pid_start")):
            continue
        client.set_tag(run.info.run_id, END_REASON,
                       f"process {pid} ended without closing its run (killed or crashed); "
                       f"closed by run {current_run_id}")
        client.set_terminated(run.info.run_id, KILLED)
        closed.append(run.info.run_id)
    if closed:
        logger.info("Closed %d MLflow run(s) left RUNNING by a killed process as KILLED: %s",
                    len(closed), ", ".join(closed))
    return closed


class RunStatusHooks:
    """Interrupts → ``KILLED``; runs orphaned by SIGKILL → ``KILLED``; fast tracking failure."""

    @hook_impl(tryfirst=True)  # before kedro-mlflow's first request to the server
    def after_context_created(self, context: Any) -> None:
        limit_http_retries()
        from ups_kedro.paths import mlflow_tracking_uri

        check_tracking_reachable(mlflow_tracking_uri())

    @hook_impl(trylast=True)  # kedro-mlflow has started the run
    def before_pipeline_run(self) -> None:
        global _interrupt, _atexit_registered  # noqa: PLW0603
        import mlflow

        _interrupt = None
        _install_signal_handlers()
        if not _atexit_registered:
            atexit.register(_at_exit)
            _atexit_registered = True
        run = mlflow.active_run()
        if run is None:
            return
        pid = os.getpid()
        mlflow.set_tags({"ups.host": socket.gethostname(), "ups.pid": str(pid),
                         "ups.pid_start": process_start(pid) or "",
                         "ups.started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        try:
            close_orphaned_runs(run.info.run_id)
        except Exception as exc:  # noqa: BLE001 - housekeeping must not fail the run
            logger.warning("could not check for MLflow runs left RUNNING: %s", exc)

    @hook_impl
    def after_pipeline_run(self) -> None:
        _restore_signal_handlers()

    @hook_impl(tryfirst=True)  # the run is still active: kedro-mlflow ends it FAILED after us
    def on_pipeline_error(self, error: Exception) -> None:
        _restore_signal_handlers()
        import mlflow

        if mlflow.active_run() is not None:
            reason = one_line(user_error(error) or error)
            try:
                mlflow.set_tag(END_REASON, reason[:5000])
            except Exception as exc:  # noqa: BLE001 - kedro-mlflow must still end the run
                logger.warning("could not tag the failed MLflow run: %s", exc)
