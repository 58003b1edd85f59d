"""Shared set-up for the training-engine tests.

The helpers live in ``training_support.py`` beside this file (the SIGKILL test also runs it as
a script); its folder is put on ``sys.path`` so the import works under any pytest import mode.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

