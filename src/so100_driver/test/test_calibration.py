"""Calibration: ticks <-> radians round trips, YAML save/load, LeRobot JSON import as it is."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from so100_driver.calibration import (
    Calibration,
    JointCalibration,
    default_calibration,
    default_calibration_path,
    import_lerobot_json,
    load_calibration,
    save_calibration,
)
from so100_driver.joints import JOINT_NAMES, SO100_JOINTS, SO101_JOINTS

# A follower calibration as LeRobot 0.4+ writes it (so_follower: ~/.cache/huggingface/lerobot/calibration/...).
LEROBOT_JSON = {
    "shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": -1027, "range_min": 758, "range_max": 3325},
    "shoulder_lift": {"id": 2, "drive_mode": 0, "homing_offset": 1190, "range_min": 800, "range_max": 3230},
    "elbow_flex": {"id": 3, "drive_mode": 0, "homing_offset": -1342, "range_min": 863, "range_max": 3093},
    "wrist_flex": {"id": 4, "drive_mode": 0, "homing_offset": 1100, "range_min": 866, "range_max": 3204},
    "wrist_roll": {"id": 5, "drive_mode": 0, "homing_offset": -40, "range_min": 0, "range_max": 4095},
    "gripper": {"id": 6, "drive_mode": 0, "homing_offset": 1385, "range_min": 2023, "range_max": 3431},
}


@given(
    lo=st.integers(0, 2000),
    span=st.integers(10, 2000),
    drive=st.sampled_from([0, 1]),
    ticks=st.integers(0, 4095),
)
def test_ticks_radians_round_trip_inside_the_range(lo, span, drive, ticks):
    cal = JointCalibration(1, drive, 0, lo, lo + span)
    inside = min(max(ticks, cal.range_min), cal.range_max)
    assert cal.to_ticks(cal.to_radians(inside)) == inside


def test_conversion_matches_lerobot_degrees_mode():
    cal = JointCalibration(1, 0, 0, 1000, 3000)
    # LeRobot DEGREES: (val - mid) * 360 / 4095
    assert math.degrees(cal.to_radians(2500)) == pytest.approx((2500 - 2000) * 360 / 4095)
    assert JointCalibration(1, 1, 0, 1000, 3000).to_radians(2500) == pytest.approx(-cal.to_radians(2500))


def test_commands_are_clamped_to_the_recorded_range():
    cal = JointCalibration(1, 0, 0, 1000, 3000)
    assert cal.to_ticks(100.0) == 3000 and cal.to_ticks(-100.0) == 1000
    with pytest.raises(ValueError, match="non-finite"):
        cal.to_ticks(math.nan)


def test_yaml_round_trip(tmp_path):
    cal = default_calibration(SO101_JOINTS)
    path = save_calibration(Calibration(cal.joints, "so101"), tmp_path / "arm.yaml")
    loaded = load_calibration(path)
    assert loaded == Calibration(cal.joints, "so101")
    assert "2*pi/4095" in path.read_text()


def test_shipped_default_covers_every_joint_limit():
    cal = load_calibration(default_calibration_path("so100"))
    for spec, joint in zip(SO100_JOINTS, cal.for_joints(SO100_JOINTS), strict=True):
        lo, hi = joint.to_radians(joint.range_min), joint.to_radians(joint.range_max)
        assert lo <= spec.lower and hi >= spec.upper, spec.name


def test_lerobot_json_imports_as_is(tmp_path):
    path = tmp_path / "my_follower.json"
    path.write_text(json.dumps(LEROBOT_JSON, indent=4))
    cal = load_calibration(path)
    assert list(cal.joints) == list(JOINT_NAMES)
    assert cal.joints["gripper"] == JointCalibration(6, 0, 1385, 2023, 3431)
    assert [c.id for c in cal.for_joints(SO100_JOINTS)] == [1, 2, 3, 4, 5, 6]
    # and converts to our YAML without loss
    assert load_calibration(save_calibration(cal, tmp_path / "c.yaml")).joints == cal.joints


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["elbow_flex"].pop("range_min"), "lacks 'range_min'"),
        (lambda d: d["elbow_flex"].update(range_min=4000), "range_min < range_max"),
        (lambda d: d["elbow_flex"].update(drive_mode=2), "drive_mode"),
        (lambda d: d["elbow_flex"].update(homing_offset=5000), "homing_offset"),
    ],
)
def test_bad_lerobot_json_names_the_problem(tmp_path, mutate, message):
    data = json.loads(json.dumps(LEROBOT_JSON))
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        import_lerobot_json(path)


def test_wrong_servo_id_is_refused():
    joints = dict(default_calibration(SO100_JOINTS).joints)
    joints["gripper"] = JointCalibration(7, 0, 0, 1000, 3000)
    with pytest.raises(ValueError, match="gripper servo id 7"):
        Calibration(joints).for_joints(SO100_JOINTS)
