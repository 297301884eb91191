"""moveit_adapter: move_group's parameters come from the generated config; named states as safe timed moves;
clear errors where moveit_py is missing; the launch file compiles."""

import importlib.util
import py_compile
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from mole_vla_ros.bringup import config_dir
from mole_vla_ros.moveit_adapter import (
    MoveItNamedStateMover,
    move_group_parameters,
    named_state_trajectory,
    named_states,
)
from so100_driver.joints import ARM_JOINT_NAMES, GRIPPER_JOINT_NAME, joints_for
from so100_driver.srdf import NAMED_ARM_STATES

ARMS = ("so100", "so101")


@pytest.mark.parametrize("arm", ARMS)
@pytest.mark.parametrize("hardware", ["mock", "topic_based"])
def test_move_group_parameters_come_from_the_generated_config(arm, hardware):
    params = move_group_parameters(arm, hardware)
    urdf = ET.fromstring(params["robot_description"])
    plugin = urdf.find("ros2_control/hardware/plugin").text
    assert (
        plugin
        == {"mock": "mock_components/GenericSystem", "topic_based": "topic_based_ros2_control/TopicBasedSystem"}[
            hardware
        ]
    )
    srdf = ET.fromstring(params["robot_description_semantic"])
    assert srdf.attrib["name"] == urdf.attrib["name"] == arm
    assert set(params["robot_description_planning"]["joint_limits"]) == {j.name for j in joints_for(arm)}
    assert "arm" in params["robot_description_kinematics"]
    assert params["planning_pipelines"]["pipeline_names"] == ["ompl"]
    assert "arm" in params["ompl"]
    manager = params["moveit_simple_controller_manager"]
    assert manager["joint_trajectory_controller"]["joints"] == list(ARM_JOINT_NAMES)
    with pytest.raises(ValueError, match="hardware"):
        move_group_parameters(arm, "gazebo")
    with pytest.raises(ValueError, match="unknown arm"):
        move_group_parameters("so102")


def test_named_states_are_the_srdf_ones():
    states = named_states("so100")
    assert states["ready"] == dict(zip(ARM_JOINT_NAMES, NAMED_ARM_STATES["ready"], strict=True))
    gripper = {j.name: j for j in joints_for("so100")}[GRIPPER_JOINT_NAME]
    assert states["open"] == {GRIPPER_JOINT_NAME: gripper.upper}


@pytest.mark.parametrize("arm", ARMS)
def test_named_state_trajectory_reaches_the_state_within_the_speed_caps(arm):
    current = np.array([0.4, -0.3, 0.5, 0.0, 1.0, 0.8])
    times, positions = named_state_trajectory(arm, "ready", current, speed_scale=0.5, fps=30.0)
    assert positions.shape == (len(times), 6) and np.all(np.diff(times) > 0)
    assert positions[-1, :5] == pytest.approx(NAMED_ARM_STATES["ready"])
    assert np.allclose(positions[:, 5], current[5])  # the arm state leaves the gripper alone
    caps = np.array([j.max_velocity for j in joints_for(arm)]) * 0.5
    steps = np.diff(np.vstack([current, positions]), axis=0)
    assert np.all(np.abs(steps) <= caps / 30.0 + 1e-9)
    # Already there: one point, the state itself.
    times, positions = named_state_trajectory(arm, "ready", positions[-1])
    assert len(times) == 1 and positions[0, :5] == pytest.approx(NAMED_ARM_STATES["ready"])


def test_named_state_trajectory_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown named state"):
        named_state_trajectory("so100", "dance", np.zeros(6))
    with pytest.raises(ValueError, match="finite"):
        named_state_trajectory("so100", "home", np.array([0, 0, np.nan, 0, 0, 0]))
    with pytest.raises(ValueError, match="speed_scale"):
        named_state_trajectory("so100", "home", np.zeros(6), speed_scale=0.0)


@pytest.mark.skipif(importlib.util.find_spec("moveit") is not None, reason="moveit_py installed")
def test_moveit_mover_without_moveit_py_points_to_the_fallback():
    with pytest.raises(RuntimeError, match="named_state_trajectory"):
        MoveItNamedStateMover()


def test_moveit_launch_file_compiles_and_its_config_exists():
    launch = config_dir().parent / "launch" / "moveit.launch.py"
    py_compile.compile(str(launch), doraise=True)
    for arm in ARMS:
        assert (config_dir() / "ros2_control" / f"{arm}_controllers.yaml").is_file()
