"""arm_node over real DDS, in a child process, driving the REAL scservo_sdk against the fake pty servo bus."""

from __future__ import annotations

import math

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from so100_driver.calibration import default_calibration_path, load_calibration
from so100_driver.joints import JOINT_NAMES, SO100_JOINTS
from so100_driver.testing.arm_rig import arm_rig, positions, trajectory
from so100_driver.testing.ros_harness import wait_until

pytestmark = pytest.mark.dds
CAL = load_calibration(default_calibration_path())


@pytest.fixture(scope="module")
def rig():
    """One fake bus + one arm_node for the module."""
    with arm_rig(watchdog_timeout=0.3, control_rate=100.0) as rig:
        yield rig


def call(rig, name):
    client = rig["probe"].create_client(Trigger, name)
    wait_until(lambda: client.wait_for_service(timeout_sec=0.0), 10, rig["spin"], f"service {name}")
    future = client.call_async(Trigger.Request())
    wait_until(future.done, 10, rig["spin"], f"{name} response")
    rig["probe"].destroy_client(client)
    return future.result()


def test_joint_states_named_and_published_near_50hz(rig):
    assert list(rig["state"]["js"].name) == list(JOINT_NAMES)
    start = rig["state"]["count"]
    wait_until(lambda: rig["state"]["count"] - start >= 25, 5, rig["spin"], "25 joint_states")


def test_trajectory_converges_then_goal_bytes_stay_inside_the_calibrated_range(rig):
    target = np.array([0.3, -0.2, 0.25, 0.1, -0.4, 0.5])
    for _ in range(12):  # stream it (the watchdog wants commands every 0.3 s)
        rig["traj_pub"].publish(trajectory(target, 0.25))
        rig["spin_for"](0.1)
    try:
        wait_until(lambda: np.allclose(positions(rig), target, atol=0.01), 5, rig["spin"], "convergence")
    except TimeoutError:
        raise AssertionError(f"at {positions(rig)}, wanted {target}\n{rig['node'].tail()}") from None
    for _, entries in list(rig["bus"].sync_writes):
        for joint, cal in CAL.joints.items():
            tick = int.from_bytes(entries[cal.id], "little")
            assert cal.range_min <= tick <= cal.range_max, joint


def test_command_beyond_limits_is_clamped(rig):
    for _ in range(20):
        rig["cmd_pub"].publish(JointState(name=["shoulder_pan"], position=[10.0]))
        rig["spin_for"](0.1)
    upper = SO100_JOINTS[0].upper
    wait_until(lambda: abs(positions(rig)[0] - upper) < 0.01, 5, rig["spin"], "pan at its upper limit")
    rig["spin_for"](0.3)
    assert positions(rig)[0] <= upper + 2 * math.pi / 4095


def test_trajectory_published_once_runs_to_its_end_past_the_watchdog(rig):
    # 1.2 s long, one message, watchdog 0.3 s: JointTrajectoryController runs it to the end, so do we.
    start = positions(rig)
    target = start.copy()
    target[1] = start[1] - 0.6
    rig["traj_pub"].publish(trajectory(target, 1.2))
    try:
        wait_until(lambda: abs(positions(rig)[1] - target[1]) < 0.01, 5, rig["spin"], "the trajectory's end")
    except TimeoutError:
        raise AssertionError(f"stopped at {positions(rig)[1]:.3f}, wanted {target[1]:.3f}") from None


def test_watchdog_holds_when_a_joint_command_stream_stops(rig):
    start = positions(rig)[4]
    goal = 2.6 if start < 0 else -2.6  # ~1 s away at 3 rad/s: the 0.3 s watchdog fires well before
    rig["cmd_pub"].publish(JointState(name=["wrist_roll"], position=[goal]))
    wait_until(lambda: abs(positions(rig)[4] - start) > 0.05, 5, rig["spin"], "motion starts")
    rig["spin_for"](0.6)
    held = positions(rig)[4]
    rig["spin_for"](0.5)
    assert abs(positions(rig)[4] - held) < 0.005, "still moving after the watchdog"
    assert abs(held - start) < abs(goal - start) - 0.5, "it reached the goal: the watchdog never fired"


def test_nan_command_rejected_and_arm_holds(rig):
    before = positions(rig)
    rig["cmd_pub"].publish(JointState(name=["elbow_flex"], position=[float("nan")]))
    wait_until(lambda: "non-finite" in rig["node"].tail(20), 5, rig["spin"], "a logged rejection")
    rig["spin_for"](0.3)
    assert np.allclose(positions(rig), before, atol=0.005)


def test_estop_latches_until_reset(rig):
    assert call(rig, "estop").success
    before = positions(rig)
    for _ in range(5):
        rig["cmd_pub"].publish(JointState(name=["wrist_flex"], position=[-0.8]))
        rig["spin_for"](0.1)
    assert np.allclose(positions(rig), before, atol=0.005)
    assert "e-stop latched" in rig["node"].tail(30)
    assert call(rig, "reset_estop").success
    for _ in range(20):
        rig["cmd_pub"].publish(JointState(name=["wrist_flex"], position=[-0.8]))
        rig["spin_for"](0.1)
    wait_until(lambda: abs(positions(rig)[3] + 0.8) < 0.01, 5, rig["spin"], "motion after reset")


def test_silent_servo_reported_others_hold(rig):
    bus = rig["bus"]
    bus.servo(5).silent = True
    try:

        def wrist_roll_error():
            for array in rig["state"]["diag"][-5:]:
                for status in array.status:
                    if status.name.endswith("wrist_roll") and status.level == DiagnosticStatus.ERROR:
                        return status.message
            return None

        message = wait_until(wrist_roll_error, 5, rig["spin"], "an ERROR diagnostic for wrist_roll")
        assert "servo 5" in message
        before = positions(rig)
        for _ in range(5):
            rig["cmd_pub"].publish(JointState(name=["shoulder_pan"], position=[0.0]))
            rig["spin_for"](0.1)
        assert np.allclose(positions(rig)[[0, 1, 2, 3, 5]], before[[0, 1, 2, 3, 5]], atol=0.005)
        assert "holding because of joint fault" in rig["node"].tail(30)
    finally:
        bus.servo(5).silent = False
    wait_until(lambda: "answers again" in rig["node"].tail(40), 5, rig["spin"], "recovery")
