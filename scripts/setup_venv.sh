#!/usr/bin/env bash
# Create or reuse .venv, install the pinned requirements, and apply the fixes the ROS 2 PyPI wheels need.
# Idempotent and quick when nothing changed (a stamp file records the requirements' hash).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
STAMP=$VENV/.requirements.sha256
LOG=$VENV/pip-install.log
PYTHON=${PYTHON:-python3}

want=$(cat requirements*.txt scripts/setup_venv.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x $VENV/bin/python ]; then
  exit 0
fi

if [ ! -x $VENV/bin/python ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  $PYTHON -m venv $VENV
fi
echo "[setup] installing pinned requirements into $VENV (a few minutes on a bare machine; log: $LOG)"
if ! $VENV/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt >"$LOG" 2>&1; then
  grep -v "is ignored: it is neither a file nor a directory" "$LOG" | tail -40
  echo "[setup] pip install failed (full log: $LOG)" >&2
  exit 1
fi

# The wheels' CMake export files name the include paths of the machine they were built on; point them at
# this interpreter's Python headers and numpy, or rosidl interface builds fail at CMake generate time.
$VENV/bin/python scripts/fix_ros_wheel_paths.py "$VENV"

# A CUDA torch sneaking in (a loose pin somewhere) would cost gigabytes and change numerics: refuse it.
$VENV/bin/python - <<'PY'
import sys, torch
if not torch.__version__.endswith("+cpu") and torch.__version__ != "2.13.0":
    sys.exit(f"[setup] expected the CPU build of torch 2.13.0, found {torch.__version__}")
PY
echo "$want" >"$STAMP"
echo "[setup] $VENV ready"
