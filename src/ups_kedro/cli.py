"""Project CLI: ``kedro run`` that ends the project's own errors with one clear line.

Kedro picks up ``cli`` (project commands) and ``run`` (used by ``python -m ups_kedro``) from this
module; our ``run`` takes every option of Kedro's and adds:

* **One line for a user error.**  An error the user fixes (:class:`~ups_kedro.errors.UserError`,
  a dataset that cannot be loaded, a lineage check of ours) ends the run with
  ``Error: <message>`` and exit code 1.  The traceback goes to the log file
  (``ups_kedro.log``, see ``conf/logging.yml``); ``--verbose-errors`` or ``UPS_VERBOSE=1``
  shows it on the terminal as well.  Anything else is a bug and keeps its full traceback.
* **Interrupts.**  Ctrl-C and SIGTERM end with one line, exit code 130 / 143, and the MLflow run
  closed as ``KILLED`` (:mod:`ups_kedro.run_status`).
* **Which errors are the user's** is decided in :mod:`ups_kedro.error_report` (shared with
  the run-status hooks, which tag a failed MLflow run with the same line).
* **Up-to-date nodes are skipped**: the default runner is :class:`ups_kedro.runner.ReuseRunner`
  (``--runner SequentialRunner`` runs every node; ``--nodes`` runs exactly the nodes named).
* **``--pipeline`` without a deprecation warning.**  Kedro deprecates ``--pipeline`` in favour of
  ``--pipelines``; both are accepted here, ``--pipeline`` as a plain alias (comma-separated too).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
import warnings
from typing import Any

import click
from kedro.framework.cli.project import run as _kedro_run
from kedro.framework.cli.utils import _split_params

from ups_kedro.error_report import one_line, user_error

__all__ = ["cli", "one_line", "run", "user_error"]

VERBOSE_ENV = "UPS_VERBOSE"
logger = logging.getLogger("ups_kedro.cli")


#: Library deprecation notices a user cannot act on (they concern Kedro's and MLflow's own code).
_NOISE = (
    r"register_new_resolver\(\) is deprecated",       # omegaconf, called by Kedro / kedro-mlflow
    r".*Add type hints to the `predict` method",       # mlflow, on kedro-mlflow's model class
    r"Option '--pipeline' is deprecated",             # Kedro; our run accepts --pipeline
    # torch, once per process, on a read-only memory-mapped chunk that is only read
    r"The given NumPy array is not writable",
)


class _NoiseFilter(logging.Filter):
    """Drops captured warnings whose text matches :data:`_NOISE`."""

    _patterns = tuple(re.compile(pattern) for pattern in _NOISE)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(pattern.search(text) for pattern in self._patterns)


def quiet_library_warnings() -> None:
    """Silence :data:`_NOISE`; show every other Python warning on the terminal again.

    ``conf/logging.yml`` sends warnings to the log file only, so the notices emitted while Kedro
    loads its plugins (before any project code runs) stay off the terminal; from here on the
    filters drop the noise and the terminal handlers get the remaining warnings back.
    """
    for pattern in _NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    captured = logging.getLogger("py.warnings")
    if not any(isinstance(f, _NoiseFilter) for f in captured.filters):
        # Also at the logger: a library may reset the warning filters (catch_warnings, "always").
        captured.addFilter(_NoiseFilter())
    if not captured.propagate:
        for handler in logging.getLogger().handlers:
            if not isinstance(handler, logging.FileHandler) and handler not in captured.handlers:
                captured.addHandler(handler)


quiet_library_warnings()


@click.group(name="ups_kedro")
def cli() -> None:
    """Commands of the ups_kedro project."""


def _verbose(flag: bool) -> bool:
    return flag or os.environ.get(VERBOSE_ENV, "").strip().lower() in {"1", "true", "yes"}


def _run(verbose_errors: bool, pipeline: str | None, pipelines: list[str], **kwargs: Any) -> Any:
    if pipeline and pipelines:
        raise click.UsageError("use either --pipeline or --pipelines, not both")
    if pipeline:
        pipelines = [name.strip() for name in pipeline.split(",") if name.strip()]
    from ups_kedro import run_status

    # Nodes that are up to date are skipped (ups_kedro.runner) unless another runner is asked
    # for, or nodes are named (`--nodes`: run exactly those).
    if not kwargs.get("runner") and not kwargs.get("node_names"):
        kwargs["runner"] = "ups_kedro.runner.ReuseRunner"
    try:
        return _kedro_run.callback(pipeline=None, pipelines=pipelines, **kwargs)
    except KeyboardInterrupt:
        reason = run_status.interrupt_reason() or "SIGINT"
        run_id = run_status.end_interrupted(reason)
        where = f"; MLflow run {run_id} marked KILLED" if run_id else ""
        click.secho(f"Interrupted ({reason}){where}. Run the same command again to resume.",
                    fg="yellow", err=True)
        sys.exit(143 if reason == "SIGTERM" else 130)
    except Exception as exc:  # noqa: BLE001 - sorted into ours (one line) and bugs (re-raised)
        err = user_error(exc)
        if err is None or _verbose(verbose_errors):
            raise
        logger.debug("kedro run failed:\n%s", "".join(traceback.format_exception(exc)))
        _to_log_file(exc)
        click.secho(f"Error: {one_line(err)}", fg="red", err=True)
        click.echo(f"(traceback: --verbose-errors or {VERBOSE_ENV}=1; also in ups_kedro.log)",
                   err=True)
        sys.exit(1)


def _to_log_file(exc: BaseException) -> None:
    """Write the traceback to the file handlers of the root logger only (not the terminal)."""
    record = logging.LogRecord("ups_kedro.cli", logging.ERROR, __file__, 0,
                               "kedro run failed", None, (type(exc), exc, exc.__traceback__))
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _params() -> list[click.Parameter]:
    params = []
    for param in _kedro_run.params:
        if param.name == "pipeline":
            param = click.Option(["--pipeline", "-p"], type=str, default=None,
                                 help="Name(s) of the registered pipeline(s) to run, "
                                      "comma-separated (same as --pipelines).")
        params.append(param)
    params.append(click.Option(["--verbose-errors"], is_flag=True, default=False,
                               help=f"Show the full traceback of a failed run (or set "
                                    f"{VERBOSE_ENV}=1)."))
    return params


run = click.Command(name="run", callback=_run, params=_params(), help=_kedro_run.help,
                    short_help=_kedro_run.short_help)
cli.add_command(run)


@cli.command(name="status")
@click.option("--env", "-e", default=None, help="Kedro configuration environment (as kedro run).")
@click.option("--pipeline", "-p", default="__default__", help="Pipeline to inspect.")
@click.option("--params", type=click.UNPROCESSED, default="", callback=_split_params,
              help="Runtime parameters as for kedro run (key=value,key2=value2), e.g. to see "
                   "what a change would retrain.")
def status(env: str | None, pipeline: str, params: dict) -> None:
    """What `kedro run` would retrain, and why; which nodes it would skip (nothing is trained).

    Force a stage with `kedro run --params <stage>.force=true` (it and everything downstream of
    it retrain).
    """
    from pathlib import Path

    from ups_kedro.pipelines.stage_dry_run import dry_run_nodes, format_table

    try:
        verdicts, to_run, skipped = dry_run_nodes(Path.cwd(), env, params or {}, pipeline)
    except Exception as exc:  # noqa: BLE001 - one line for ours, as `kedro run`
        err = user_error(exc)
        if err is None:
            raise
        click.secho(f"Error: {one_line(err)}", fg="red", err=True)
        sys.exit(1)
    click.echo(format_table(verdicts))
    click.echo(f"\nnodes: {len(skipped)} up to date (skipped), {len(to_run)} would run"
               + (f": {', '.join(to_run)}" if to_run else ""))
