#!/usr/bin/env bash
# A separate virtual environment for the peer we measure against: LeRobot's own SmolVLA.
# lerobot 0.6.1 needs Python >= 3.12 and torch < 2.12, so it cannot share the project's Python 3.11 /
# torch 2.13 environment (see README, Benchmarks). The registry's torch 2.11.0 is a CUDA build; it runs on the CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.venv-lerobot
PY312=${PY312:-$(ls -d /root/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | head -1)}
if [ -z "$PY312" ] && python3.12 --version >/dev/null 2>&1; then PY312=$(command -v python3.12); fi
if [ -z "$PY312" ]; then
  echo "bench/peer: no Python 3.12 found (set PY312=/path/to/python3.12); LeRobot 0.6.1 needs it" >&2
  exit 2
fi
STAMP=$VENV/.ready-0.6.1
[ -f $STAMP ] && exit 0
[ -x $VENV/bin/python ] || "$PY312" -m venv $VENV
$VENV/bin/python -m pip install --disable-pip-version-check -q "lerobot[smolvla]==0.6.1" "torch==2.11.0" \
  >$VENV/pip-install.log 2>&1 || { tail -30 $VENV/pip-install.log; exit 1; }
touch $STAMP
echo "bench/peer: $VENV ready ($($VENV/bin/python -c 'import lerobot, torch; print("lerobot", lerobot.__version__, "torch", torch.__version__)'))"
