#!/usr/bin/env bash
# Install the packages' Python-only dependencies (requirements-ml.txt, the same pins `make` uses) on a ROS install
# from apt, into a venv that still sees the distro's Python packages (rclpy, numpy, cv2 from apt).
#   TORCH_VARIANT=cpu (default) or cu128/cu130...: which PyTorch build to take from download.pytorch.org.
# Jazzy/Kilted's apt packages are compiled against the distro's numpy 1.x, and python3-opencv comes from apt, so those
# two pins are left out here: the venv keeps the distro's numpy and OpenCV.
set -euo pipefail
VENV=${VENV:-/opt/mole-venv}
TORCH_VARIANT=${TORCH_VARIANT:-cpu}
here="$(cd "$(dirname "$0")/.." && pwd)"
python3 -m venv --system-site-packages "$VENV"
grep -vE '^(numpy|opencv-python-headless)==' "$here/requirements-ml.txt" >/tmp/requirements-ros-apt.txt
"$VENV/bin/pip" install --no-cache-dir --extra-index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
  -r /tmp/requirements-ros-apt.txt "numpy<2"
