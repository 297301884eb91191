"""The URDF/MJCF are generated from the joint table and the link table; FK agrees with MuJoCo."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import mujoco
import numpy as np
import pytest

from so100_driver.description import (
    END_EFFECTOR,
    GEOMETRY,
    MODELS_DIR,
    URDF_DIR,
    forward_kinematics,
    generate_urdf,
    generated_files,
    links_for,
)
from so100_driver.joints import joints_for

ARMS = sorted(GEOMETRY)


def test_generated_files_are_up_to_date():
    stale = [str(p) for p, text in generated_files().items() if not p.exists() or p.read_text() != text]
    assert not stale, f"regenerate with `python -m so100_driver.description`: {stale}"


@pytest.mark.parametrize("arm", ARMS)
def test_urdf_joints_match_joint_table(arm):
    root = ET.fromstring((URDF_DIR / f"{arm}.urdf").read_text())
    revolute = [j for j in root.iter("joint") if j.get("type") == "revolute"]
    specs = joints_for(arm)
    assert [j.get("name") for j in revolute] == [s.name for s in specs]
    for joint, spec in zip(revolute, specs, strict=True):
        limit = joint.find("limit")
        assert float(limit.get("lower")) == pytest.approx(spec.lower, abs=1e-9)
        assert float(limit.get("upper")) == pytest.approx(spec.upper, abs=1e-9)
        assert float(limit.get("effort")) == pytest.approx(spec.max_effort)
        assert float(limit.get("velocity")) == pytest.approx(spec.max_velocity)
    links = {link.get("name") for link in root.iter("link")}
    assert {END_EFFECTOR, "base_link", "gripper_link"} <= links
    for link in root.iter("link"):
        inertial = link.find("inertial")
        if link.get("name") in (END_EFFECTOR, "grasp"):
            continue
        assert float(inertial.find("mass").get("value")) > 0
        assert all(float(inertial.find("inertia").get(k)) > 0 for k in ("ixx", "iyy", "izz"))


@pytest.mark.parametrize("arm", ARMS)
def test_mjcf_joints_and_actuators_match_joint_table(arm):
    model = mujoco.MjModel.from_xml_path(str(MODELS_DIR / f"{arm}.xml"))
    specs = joints_for(arm)
    assert [model.joint(i).name for i in range(model.njnt)] == [s.name for s in specs]
    for spec in specs:
        np.testing.assert_allclose(model.joint(spec.name).range, [spec.lower, spec.upper], atol=1e-9)
        actuator = model.actuator(spec.name)
        np.testing.assert_allclose(actuator.ctrlrange, [spec.lower, spec.upper], atol=1e-9)
        np.testing.assert_allclose(actuator.forcerange, [-spec.max_effort, spec.max_effort], atol=1e-6)


@pytest.mark.parametrize("arm", ARMS)
def test_forward_kinematics_matches_mujoco(arm):
    model = mujoco.MjModel.from_xml_path(str(MODELS_DIR / f"{arm}.xml"))
    data = mujoco.MjData(model)
    specs = joints_for(arm)
    rng = np.random.default_rng(7)
    for _ in range(50):
        q = rng.uniform([s.lower for s in specs], [s.upper for s in specs])
        data.qpos[:] = q
        mujoco.mj_kinematics(model, data)
        frames = forward_kinematics(q, arm)
        for link in links_for(arm):
            np.testing.assert_allclose(frames[link.name][:3, 3], data.body(link.name).xpos, atol=1e-9)
            np.testing.assert_allclose(frames[link.name][:3, :3], data.body(link.name).xmat.reshape(3, 3), atol=1e-9)
        np.testing.assert_allclose(frames[END_EFFECTOR][:3, 3], data.site(END_EFFECTOR).xpos, atol=1e-9)


def test_zero_pose_is_an_upright_L():
    frames = forward_kinematics(np.zeros(6))
    shoulder, elbow, wrist = (frames[n][:3, 3] for n in ("upper_arm_link", "lower_arm_link", "wrist_link"))
    upper = elbow - shoulder
    assert math.degrees(math.atan2(abs(upper[0]), upper[2])) < 20, "upper arm should stand roughly upright"
    forearm = wrist - elbow
    assert forearm[0] > 0.1 and abs(forearm[2]) < 0.01, "forearm should point forward, level"
    tip = frames[END_EFFECTOR][:3, 3]
    assert tip[0] > wrist[0] and tip[2] > 0.15 and abs(tip[1]) < 1e-9


def test_positive_pitch_lowers_the_tip():
    base = forward_kinematics(np.zeros(6))[END_EFFECTOR][2, 3]
    for joint in (1, 2, 3):
        q = np.zeros(6)
        q[joint] = 0.3
        assert forward_kinematics(q)[END_EFFECTOR][2, 3] < base


@pytest.mark.parametrize("bad", [np.zeros(5), [0, 0, 0, math.nan, 0, 0]])
def test_forward_kinematics_rejects_bad_input(bad):
    with pytest.raises(ValueError, match="6 finite joint positions"):
        forward_kinematics(bad)


def test_unknown_arm_is_a_clear_error():
    with pytest.raises((ValueError, KeyError)):
        generate_urdf("so999")


@pytest.mark.parametrize("arm", ARMS)
def test_urdf_path_finds_the_generated_file(arm):
    from so100_driver.description import urdf_path

    assert urdf_path(arm).read_text() == generate_urdf(arm)
