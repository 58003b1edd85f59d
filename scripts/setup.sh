#!/usr/bin/env bash
# Create .venv with pinned dependencies and install this project (editable). Idempotent: a
# stamp keyed on the requirement files skips the work when nothing changed.
#
#   scripts/setup.sh                      # CPU (uses the local torch CPU wheel where present)
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 scripts/setup.sh   # NVIDIA GPU
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=$(grep -E '^torch==' requirements.txt | cut -d= -f3)
key=$(cat requirements.txt requirements.lock pyproject.toml | sha256sum | cut -c1-16)
stamp="$VENV/.ups-setup-$key${TORCH_INDEX_URL:+-gpu}"

if [ -f "$stamp" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
  echo "setup: Python >= 3.10 is required ($PYTHON is $("$PYTHON" --version 2>&1))" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

# torch first, exactly pinned: an unpinned or ranged torch would pull a multi-GB CUDA build.
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  "${pip[@]}" "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
else
  "${pip[@]}" "torch==$TORCH_VERSION"
fi
"${pip[@]}" -r requirements.txt -c requirements.lock
"${pip[@]}" --no-deps -e .

rm -f "$VENV"/.ups-setup-*
touch "$stamp"
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
