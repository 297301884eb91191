"""Leader arm + teleop: two simulated servo buses on ptys, the real SDK, arm_node and leader_node over real DDS."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sensor_msgs.msg import JointState

from so100_driver.arm_node import JOINT_STATES_QOS
from so100_driver.backend import BackendError
from so100_driver.calibration import load_calibration
from so100_driver.joints import JOINT_NAMES, SO100_JOINTS
from so100_driver.leader import LeaderArm
from so100_driver.testing.arm_rig import arm_rig, positions
from so100_driver.testing.fake_sts_bus import FakeStsBus
from so100_driver.testing.ros_harness import NodeProcess, wait_until

# A LeRobot leader calibration as LeRobot writes it: its own offsets, ranges and one reversed joint.
LEADER_JSON = {
    "shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": 120, "range_min": 700, "range_max": 3400},
    "shoulder_lift": {"id": 2, "drive_mode": 0, "homing_offset": -80, "range_min": 820, "range_max": 3250},
    "elbow_flex": {"id": 3, "drive_mode": 0, "homing_offset": 0, "range_min": 900, "range_max": 3150},
    "wrist_flex": {"id": 4, "drive_mode": 0, "homing_offset": 45, "range_min": 650, "range_max": 3450},
    "wrist_roll": {"id": 5, "drive_mode": 1, "homing_offset": 0, "range_min": 150, "range_max": 3950},
    "gripper": {"id": 6, "drive_mode": 0, "homing_offset": -30, "range_min": 1900, "range_max": 3300},
}
LOWER = np.array([j.lower for j in SO100_JOINTS])
UPPER = np.array([j.upper for j in SO100_JOINTS])


@pytest.fixture
def leader_cal_file(tmp_path):
    path = tmp_path / "so100_leader.json"
    path.write_text(json.dumps(LEADER_JSON))
    return path


def leader_bus() -> FakeStsBus:
    """A leader whose servos carry the offsets LeRobot wrote when it calibrated them."""
    bus = FakeStsBus()
    for entry in LEADER_JSON.values():
        servo = bus.servo(entry["id"])
        servo.set("Homing_Offset", entry["homing_offset"])
        servo.set("Torque_Enable", 1)  # on at power-up here: the leader node must turn it off
    return bus


def pose_leader(bus: FakeStsBus, cal_file, radians) -> None:
    """Move the leader by hand to `radians` (its calibrated joint space)."""
    cal = load_calibration(cal_file)
    with bus.lock:
        for name, r in zip(JOINT_NAMES, radians, strict=True):
            c = cal.joints[name]
            servo = bus.servo(c.id)
            servo.position = float((c.to_ticks(r) + c.homing_offset) % 4096)  # physical = present + offset
            servo.advance(0.0)


def test_leader_reads_calibrated_radians_and_writes_nothing_but_torque_off(leader_cal_file):
    bus = leader_bus().start()
    try:
        target = [0.5, -0.4, 0.3, 1.0, -0.6, 0.4]
        goals_before = {i: bus.servo(i).get("Goal_Position") for i in range(1, 7)}
        leader = LeaderArm.open(bus.port, 1_000_000, leader_cal_file, SO100_JOINTS)
        try:
            pose_leader(bus, leader_cal_file, target)  # by hand, now that torque is off
            reading = leader.read()
        finally:
            leader.close()
        assert not reading.faults
        # Same joint space as the follower: within one tick of what the leader's calibration says.
        assert np.allclose(reading.positions, target, atol=2 * np.pi / 4095)
        assert all(bus.servo(i).get("Torque_Enable") == 0 for i in range(1, 7))
        assert not bus.sync_writes, "a leader must never receive goals"
        assert {i: bus.servo(i).get("Goal_Position") for i in range(1, 7)} == goals_before
        assert load_calibration(leader_cal_file).joints["shoulder_pan"].homing_offset == 120  # file used as-is
    finally:
        bus.stop()


def test_leader_with_offsets_other_than_its_calibration_is_refused(leader_cal_file):
    bus = leader_bus().start()
    try:
        bus.servo(2).set("Homing_Offset", 0)  # a servo recalibrated by someone else
        with pytest.raises(BackendError, match=r"shoulder_lift \(servo 2\) has 0, calibration says -80"):
            LeaderArm.open(bus.port, 1_000_000, leader_cal_file, SO100_JOINTS)
        assert bus.servo(2).get("Homing_Offset") == 0  # checked, never written
    finally:
        bus.stop()


@pytest.mark.dds
def test_teleop_follower_tracks_the_leader_within_limits_and_holds_when_it_goes_silent(leader_cal_file):
    bus = leader_bus().start()
    try:
        with arm_rig(watchdog_timeout=0.3) as rig:
            args = ["--ros-args", "-p", f"port:={bus.port}", "-p", f"calibration_file:={leader_cal_file}"]
            args += ["-p", "teleop:=true"]
            leader_node = NodeProcess("so100_driver.leader_node", args, name="leader_node").start()
            try:
                seen = {"msg": None}

                def on_leader(msg):
                    seen["msg"] = msg

                rig["probe"].create_subscription(JointState, "leader/joint_states", on_leader, JOINT_STATES_QOS)
                wait_until(lambda: seen["msg"] is not None, 20, rig["spin"], "leader_node up (its torque off)")
                # wrist_flex 2.0 rad on the leader is past the follower's limit (1.66 rad): it must stop there.
                target = np.array([0.5, -0.4, 0.3, 2.0, -0.6, 0.4])
                pose_leader(bus, leader_cal_file, target)
                expected = np.clip(target, LOWER, UPPER)
                try:
                    wait_until(
                        lambda: rig["state"]["js"] is not None and np.allclose(positions(rig), expected, atol=0.02),
                        15,
                        rig["spin"],
                        "the follower at the leader's pose",
                    )
                except TimeoutError:
                    raise AssertionError(
                        f"follower at {positions(rig)}, leader at {target}\n{leader_node.tail()}\n{rig['node'].tail()}"
                    ) from None
                assert np.allclose(seen["msg"].position, target, atol=0.002)
                assert list(seen["msg"].name) == list(JOINT_NAMES)
                rig["spin_for"](0.3)
                assert np.all(positions(rig) <= UPPER + 0.005) and np.all(positions(rig) >= LOWER - 0.005)

                # The leader's bus goes silent, then the leader is moved: the follower must not follow.
                for i in range(1, 7):
                    bus.servo(i).silent = True
                pose_leader(bus, leader_cal_file, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
                wait_until(lambda: "no command sent" in leader_node.tail(20), 10, rig["spin"], "leader loss logged")
                rig["spin_for"](0.5)  # the follower's watchdog (0.3 s) has held it by now
                held = positions(rig)
                rig["spin_for"](0.5)
                assert np.allclose(positions(rig), held, atol=0.005)
                assert np.allclose(held, expected, atol=0.03), "the follower moved toward a pose it was never sent"
                assert leader_node.alive(), leader_node.tail()

                # The leader answers again: tracking resumes (through the same safety layer).
                for i in range(1, 7):
                    bus.servo(i).silent = False
                wait_until(
                    lambda: np.allclose(positions(rig), 0.0, atol=0.02), 15, rig["spin"], "tracking after recovery"
                )
            finally:
                assert leader_node.stop() == 0, leader_node.tail()
    finally:
        bus.stop()
