#!/usr/bin/env bash
# Build the workspace: the one colcon invocation used by `make build` and by the Docker images.
# Expects a ROS environment (scripts/env.sh here, /opt/ros/<distro>/setup.bash in Docker). Extra args go to colcon.
set -eo pipefail
# WORKSPACE_ROOT: where build/ install/ log/ go (the repository itself here; /ws in Docker).
cd "${WORKSPACE_ROOT:-$(dirname "$0")/..}"
mkdir -p log
colcon --log-base log build --symlink-install --event-handlers console_direct- \
  --cmake-args -DBUILD_TESTING=OFF -Wno-dev "$@" >log/colcon-build.out 2>&1 \
  || { tail -60 log/colcon-build.out; echo "colcon build failed (log/colcon-build.out)" >&2; exit 1; }
echo "[build] workspace built (install/)"
