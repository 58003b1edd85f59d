"""Consistency checks between artifacts (torch-free, Kedro-free): used by every layer above."""

from __future__ import annotations

from collections.abc import Iterable


def require_same(what: str, expected: str | None, got: str | None, hint: str) -> None:
    """Refuse mismatched upstream artifacts (e.g. latents from another encoder)."""
    if expected != got:
        raise ValueError(f"{what} mismatch: expected {expected}, got {got}. {hint}")


def require_meta(key: str, expected: str | None, bundles: Iterable, what: str,
                 hint: str) -> str | None:
    """Every array bundle's ``meta[key]`` equals ``expected`` (``what`` names it in errors,
    followed by the bundle's split); returns ``expected``."""
    for bundle in bundles:
        require_same(f"{what} of {bundle.meta.get('split')} data", expected,
                     bundle.meta.get(key), hint)
    return expected
