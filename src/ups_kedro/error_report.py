"""Which failures are the user's to fix, and their message on one line.

Shared by the ``run`` command (:mod:`ups_kedro.cli`) and the run-status hooks
(:mod:`ups_kedro.run_status`, which tags a failed MLflow run with the same line); both import
this module and it imports neither, so the two never import each other.  It imports no
MLflow or torch (``kedro --help`` loads the CLI).
"""

from __future__ import annotations

import os
import re

from ups_kedro.errors import UserError


class TrackingUnreachableError(UserError):
    """The MLflow tracking server does not answer."""


def unreachable(uri: str, why: object) -> TrackingUnreachableError:
    return TrackingUnreachableError(
        f"MLflow tracking server {uri} is unreachable ({why}): start it, or point "
        "MLFLOW_TRACKING_URI at a reachable server (unset it to use the local mlflow.db)")


def tracking_error(exc: BaseException) -> BaseException | None:
    """A connection failure to the tracking server anywhere in ``exc``'s chain, as a user error."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    seen = exc
    while seen is not None:
        text = str(seen)
        if uri.startswith("http") and ("Max retries exceeded" in text
                                       or "Connection refused" in text
                                       or "API request to endpoint" in text):
            return unreachable(uri, text.splitlines()[0][:200] if text else "connection failed")
        seen = seen.__cause__ or seen.__context__
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes/contexts, outermost first (no cycles)."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


#: Modules whose explicit ``raise ValueError`` is a validation message (a wrong pipeline name,
#: a bad configuration file), not a bug.
_VALIDATING = ("ups_kedro.", "kedro.framework.", "kedro.config.")


def _raised_by_us(exc: BaseException) -> bool:
    """The innermost frame that raised ``exc`` is project (or Kedro configuration) code."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "")
    return module.startswith(_VALIDATING)


def user_error(exc: BaseException) -> BaseException | None:
    """The error to report in one line, or ``None`` when ``exc`` is a bug (keep the traceback).

    Ours are :class:`UserError` (anywhere in the cause chain: Kedro wraps dataset errors), the
    errors of project modules' own classes (e.g. a non-finite loss), and ``ValueError`` /
    ``FileNotFoundError`` raised by a ``raise`` statement in project code (validation).
    """
    from kedro.io import DatasetError

    chain = _chain(exc)
    for err in chain:
        if isinstance(err, UserError) or type(err).__module__.startswith("ups_kedro."):
            return err
    unknown = _unknown_pipeline(chain)
    if unknown is not None:
        return unknown
    for err in chain:
        if isinstance(err, (ValueError, FileNotFoundError, DatasetError)) and _raised_by_us(err):
            return err
    if isinstance(exc, DatasetError):  # Kedro's own load/save failures (missing file, ...)
        return exc
    return tracking_error(exc)


#: How Kedro reports a pipeline name the registry does not have (the registry is a lazy
#: mapping: an unknown name is a missing key, never a failed import).
_NO_SUCH_PIPELINE = re.compile(r"Failed to find the pipeline named '([^']+)'")


def _unknown_pipeline(chain: list[BaseException]) -> UserError | None:
    """A misspelt ``--pipeline`` name, with the names there are."""
    for err in chain:
        match = _NO_SUCH_PIPELINE.search(str(err))
        if isinstance(err, ValueError) and match:
            from ups_kedro.pipeline_registry import stage_names

            return UserError(f"there is no pipeline named {match.group(1)!r}: use one of "
                             f"{', '.join(stage_names())} (or none for the whole chain)")
    return None


def one_line(err: BaseException) -> str:
    """The message on one line (Kedro's wrappers put the cause on a new line)."""
    text = " ".join(part.strip() for part in str(err).splitlines() if part.strip())
    return text or type(err).__name__
