"""What the launcher told this process through its environment (no torch, no Kedro, no MLflow).

``torchrun`` (and any ``env://`` launcher) sets ``RANK`` and ``WORLD_SIZE``.  Settings, hooks and
MLflow glue only need to know *whether* this process is rank 0; reading that must not import
torch, or every ``kedro`` command (``kedro registry list``, ``kedro --help``) would pay for it.
"""

from __future__ import annotations

import os


def launched_rank() -> int | None:
    """``RANK`` set by ``torchrun`` (or any env:// launcher), ``None`` when not launched so."""
    value = os.environ.get("RANK")
    if value is None or "WORLD_SIZE" not in os.environ:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def launched_world_size() -> int:
    """``WORLD_SIZE`` of a launched process, 1 otherwise (or when it is not a number)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) if launched_rank() is not None else 1
    except ValueError:
        return 1
