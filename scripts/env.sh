# Source me: the environment every command of this workspace runs in (the venv's ROS 2 wheels + the
# colcon-built workspace). Used by the Makefile, the tests and the demo; a user with a ROS install from apt
# instead sources /opt/ros/<distro>/setup.bash and install/setup.bash.
_ws_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$_ws_root/.venv/bin/activate"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# MuJoCo renders offscreen through Mesa's EGL on machines without a display or GPU.
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
# Nothing here may reach a model hub: weights come from local folders.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
if [ -f "$_ws_root/install/setup.bash" ]; then
  # colcon's setup scripts reference unset variables; relax nounset while sourcing.
  _had_u=0; case $- in *u*) _had_u=1; set +u;; esac
  # shellcheck disable=SC1091
  . "$_ws_root/install/setup.bash"
  [ $_had_u = 1 ] && set -u
  # The packages' executables (mole-vla, arm_node, ...) live where `ros2 run` looks; put them on PATH too.
  export PATH="$_ws_root/install/mole_vla_ros/lib/mole_vla_ros:$_ws_root/install/so100_driver/lib/so100_driver:$PATH"
fi
unset _ws_root _had_u
