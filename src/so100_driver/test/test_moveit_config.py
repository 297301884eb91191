"""One source of truth: URDF, MJCF, SRDF, MoveIt YAMLs, controllers YAML, ros2_control block and the safety layer
all agree with joints.py, for the SO-100 and the SO-101; the generated config files are up to date."""

import xml.etree.ElementTree as ET

import mujoco
import numpy as np
import pytest
import yaml

from so100_driver import moveit_config, ros2_control
from so100_driver.description import END_EFFECTOR, MODELS_DIR, urdf_path
from so100_driver.joints import ARM_JOINT_NAMES, GRIPPER_JOINT_NAME, JOINT_NAMES, joints_for
from so100_driver.moveit_config import CONFIG_DIR, MOVEIT_DIR, ROS2_CONTROL_DIR
from so100_driver.safety import SafetyLimits

ARMS = ("so100", "so101")


def _yaml(path):
    return yaml.safe_load(path.read_text())


def _urdf_limits(text):
    root = ET.fromstring(text)
    return {
        j.attrib["name"]: (float(j.find("limit").attrib["lower"]), float(j.find("limit").attrib["upper"]))
        for j in root.findall("joint")
        if j.attrib["type"] == "revolute"
    }


def _table(arm):
    return {j.name: j for j in joints_for(arm)}


def test_generated_config_files_are_up_to_date():
    stale = [str(p) for p, text in moveit_config.generated_files().items() if not p.exists() or p.read_text() != text]
    assert not stale, f"run `python -m so100_driver.moveit_config`; stale: {stale}"
    assert moveit_config.main(["--check"]) == 0


@pytest.mark.parametrize("arm", ARMS)
def test_urdf_mjcf_and_safety_limits_match_the_joint_table(arm):
    table = _table(arm)
    expected = {name: (j.lower, j.upper) for name, j in table.items()}
    assert _urdf_limits(urdf_path(arm).read_text()) == expected
    for hardware in ros2_control.HARDWARE:
        assert _urdf_limits((ROS2_CONTROL_DIR / f"{arm}_{hardware}.urdf").read_text()) == expected
    model = mujoco.MjModel.from_xml_path(str(MODELS_DIR / f"{arm}.xml"))
    for name, (lower, upper) in expected.items():
        assert model.joint(name).range.tolist() == pytest.approx([lower, upper], abs=1e-12)
        assert model.actuator(name).ctrlrange.tolist() == pytest.approx([lower, upper], abs=1e-12)
    safety = SafetyLimits.from_joints(joints_for(arm))
    assert safety.names == JOINT_NAMES
    assert np.array_equal(safety.lower, [table[n].lower for n in JOINT_NAMES])
    assert np.array_equal(safety.upper, [table[n].upper for n in JOINT_NAMES])


@pytest.mark.parametrize("arm", ARMS)
@pytest.mark.parametrize("hardware", ros2_control.HARDWARE)
def test_ros2_control_block_commands_every_joint_inside_its_limits(arm, hardware):
    root = ET.fromstring((ROS2_CONTROL_DIR / f"{arm}_{hardware}.urdf").read_text())
    (block,) = root.iter("ros2_control")
    plugin = block.find("hardware/plugin").text
    params = {p.attrib["name"]: p.text for p in block.findall("hardware/param")}
    if hardware == "topic_based":
        assert plugin == "topic_based_ros2_control/TopicBasedSystem"
        # The arm/sim node's own topics, namespaced so joint_state_broadcaster alone owns /joint_states.
        assert params == {"joint_commands_topic": "/so100/joint_command", "joint_states_topic": "/so100/joint_states"}
    else:
        assert plugin == "mock_components/GenericSystem"
    table = _table(arm)
    joints = block.findall("joint")
    assert [j.attrib["name"] for j in joints] == list(JOINT_NAMES)
    for joint in joints:
        spec = table[joint.attrib["name"]]
        (command,) = joint.findall("command_interface")
        assert command.attrib["name"] == "position"
        bounds = {p.attrib["name"]: float(p.text) for p in command.findall("param")}
        assert bounds == {"min": spec.lower, "max": spec.upper}
        assert [s.attrib["name"] for s in joint.findall("state_interface")] == ["position", "velocity"]
    with pytest.raises(ValueError, match="hardware must be one of"):
        ros2_control.ros2_control_block(arm, "feetech")


@pytest.mark.parametrize("arm", ARMS)
def test_controllers_yaml_has_the_names_ros_users_expect(arm):
    cfg = _yaml(ROS2_CONTROL_DIR / f"{arm}_controllers.yaml")
    manager = cfg["controller_manager"]["ros__parameters"]
    assert manager["joint_state_broadcaster"]["type"] == "joint_state_broadcaster/JointStateBroadcaster"
    for name in ("joint_trajectory_controller", "gripper_controller"):
        assert manager[name]["type"] == "joint_trajectory_controller/JointTrajectoryController"
        assert cfg[name]["ros__parameters"]["command_interfaces"] == ["position"]
    assert cfg["joint_trajectory_controller"]["ros__parameters"]["joints"] == list(ARM_JOINT_NAMES)
    assert cfg["gripper_controller"]["ros__parameters"]["joints"] == [GRIPPER_JOINT_NAME]
    # Every joint of the table is driven by exactly one controller.
    driven = [
        j for c in ("joint_trajectory_controller", "gripper_controller") for j in cfg[c]["ros__parameters"]["joints"]
    ]
    assert sorted(driven) == sorted(_table(arm))


@pytest.mark.parametrize("arm", ARMS)
def test_srdf_groups_states_and_end_effector_follow_the_description(arm):
    root = ET.fromstring((MOVEIT_DIR / arm / f"{arm}.srdf").read_text())
    assert root.attrib["name"] == arm == ET.fromstring(urdf_path(arm).read_text()).attrib["name"]
    groups = {g.attrib["name"]: g for g in root.findall("group")}
    assert set(groups) == {"arm", "gripper"}
    chain = groups["arm"].find("chain").attrib
    assert chain == {"base_link": "base_link", "tip_link": END_EFFECTOR}
    assert [j.attrib["name"] for j in groups["gripper"].findall("joint")] == [GRIPPER_JOINT_NAME]
    urdf_links = {link.attrib["name"] for link in ET.fromstring(urdf_path(arm).read_text()).iter("link")}
    table = _table(arm)
    states = {(s.attrib["group"], s.attrib["name"]): s for s in root.findall("group_state")}
    assert {("arm", "home"), ("arm", "ready"), ("gripper", "open"), ("gripper", "closed")} <= set(states)
    for (group, _name), state in states.items():
        values = {j.attrib["name"]: float(j.attrib["value"]) for j in state.findall("joint")}
        assert list(values) == (list(ARM_JOINT_NAMES) if group == "arm" else [GRIPPER_JOINT_NAME])
        for joint, value in values.items():
            assert table[joint].lower <= value <= table[joint].upper
    assert float(states[("gripper", "open")].find("joint").attrib["value"]) == table[GRIPPER_JOINT_NAME].upper
    (ee,) = root.findall("end_effector")
    assert ee.attrib["parent_group"] == "arm" and ee.attrib["group"] == "gripper"
    for pair in root.findall("disable_collisions"):
        assert {pair.attrib["link1"], pair.attrib["link2"]} <= urdf_links


@pytest.mark.parametrize("arm", ARMS)
def test_moveit_yamls_match_the_joint_table_and_the_safety_layer(arm):
    limits = _yaml(MOVEIT_DIR / arm / "joint_limits.yaml")["joint_limits"]
    arm_params = _yaml(CONFIG_DIR / "arm.yaml")["arm_node"]["ros__parameters"]
    safety = SafetyLimits.from_joints(
        joints_for(arm), arm_params["max_velocity_scale"], arm_params["max_acceleration"], arm_params["max_step"]
    )
    assert list(limits) == list(safety.names)
    for i, name in enumerate(safety.names):
        assert limits[name]["max_velocity"] == pytest.approx(safety.max_velocity[i])
        assert limits[name]["max_acceleration"] == pytest.approx(safety.max_acceleration[i])
    controllers = _yaml(MOVEIT_DIR / arm / "moveit_controllers.yaml")["moveit_simple_controller_manager"]
    assert controllers["controller_names"] == ["joint_trajectory_controller", "gripper_controller"]
    assert controllers["joint_trajectory_controller"]["joints"] == list(ARM_JOINT_NAMES)
    assert controllers["gripper_controller"]["joints"] == [GRIPPER_JOINT_NAME]
    for name in controllers["controller_names"]:
        assert controllers[name]["type"] == "FollowJointTrajectory"
        assert controllers[name]["action_ns"] == "follow_joint_trajectory"
    assert "arm" in _yaml(MOVEIT_DIR / arm / "kinematics.yaml")
    ompl = _yaml(MOVEIT_DIR / arm / "ompl_planning.yaml")
    assert set(ompl["arm"]["planner_configs"]) <= set(ompl["planner_configs"])
    assert ompl["arm"]["projection_evaluator"] == "joints(shoulder_pan,shoulder_lift)"


def test_a_drifted_limit_is_caught(tmp_path, monkeypatch):
    # The generator reads the joint table: change a limit and the shipped files no longer match.
    import so100_driver.joints as joints

    drifted = (joints.SO100_JOINTS[0].__class__("shoulder_pan", 1, -1.0, 1.0), *joints.SO100_JOINTS[1:])
    monkeypatch.setitem(joints.ARMS, "so100", drifted)
    stale = [p.name for p, text in moveit_config.generated_files().items() if p.read_text() != text]
    assert "so100_topic_based.urdf" in stale and "so100_mock.urdf" in stale
