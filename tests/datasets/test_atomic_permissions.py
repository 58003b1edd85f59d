"""Atomic writes give files the permissions a plain open() would (umask), not mkstemp's 0600."""

from __future__ import annotations

import os
from pathlib import Path

from ups_kedro.atomic import atomic_file


def test_atomic_file_respects_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "f.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o644
