#!/usr/bin/env bash
# Source ROS, the Python venv and the workspace, then run the command (default: the sim bringup).
set -e
# shellcheck disable=SC1090
source "/opt/ros/${ROS_DISTRO}/setup.bash"
# shellcheck disable=SC1091
source /opt/mole-venv/bin/activate
# shellcheck disable=SC1091
source /ws/install/setup.bash
exec "$@"
