"""One top-level seed, and each stage's own seed derived from it.

``conf/<env>/globals.yml`` holds ``seed``; a Kedro hook hands it to :func:`set_base_seed`
when the context is created (``kedro run --params seed=N`` overrides it for one run).  A
stage whose ``train.seed`` is not set gets :func:`derive_seed` ``(base, stage)``: a stable
hash, so stages draw independent streams, changing the base seed changes every stage, and
adding a stage never shifts another's seed.  An explicit ``train.seed`` always wins.

Without a Kedro context (unit tests, scripts that build configs directly) the base seed is
:data:`DEFAULT_BASE_SEED`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

DEFAULT_BASE_SEED = 0
_base_seed: int | None = None


def derive_seed(base: int, stage: str) -> int:
    """A stage's seed: the first 31 bits of sha256("<base>:<stage>") (positive, int32-safe)."""
    digest = hashlib.sha256(f"{int(base)}:{stage}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def set_base_seed(seed: int | None) -> None:
    """Set the process-wide base seed (``None``: back to the default)."""
    global _base_seed  # noqa: PLW0603 - one process-wide setting, set once per Kedro context
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"globals seed must be an integer, got {seed!r}")
    _base_seed = seed


def base_seed() -> int:
    """The base seed in force (the default when none was set)."""
    return DEFAULT_BASE_SEED if _base_seed is None else _base_seed


def base_seed_from(globals_: Mapping[str, Any], params: Mapping[str, Any]) -> int | None:
    """The base seed of a Kedro run: a runtime ``--params seed=N`` over ``globals.yml``'s ``seed``.

    (Kedro's ``runtime_params`` resolver is not allowed in ``globals.yml``, so a per-run
    override has to come in as a parameter.)
    """
    value = params.get("seed", globals_.get("seed"))
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"the top-level seed must be an integer, got {value!r}; fix `seed` in "
            "conf/<env>/globals.yml or the `--params seed=N` of this run"
        )
    return value


def stage_of(where: str) -> str:
    """The stage name of a ``<stage>.train`` key path (``steady_prior.autoencoder.train`` →
    ``steady_prior.autoencoder``)."""
    return where[: -len(".train")] if where.endswith(".train") else where


def resolve_seed(seed: int | None, where: str) -> int:
    """``seed`` if set, else the seed derived from the base seed for the stage of ``where``."""
    return seed if seed is not None else derive_seed(base_seed(), stage_of(where))
