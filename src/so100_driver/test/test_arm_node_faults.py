"""Fault injection on the servo bus under a running arm_node, over real DDS (issue 8).

Each fault hits while a trajectory is moving the arm. What must hold every time: the arm ends holding still (the
goals on the bus stop changing and the joints stop) inside its limits, the node keeps running, /diagnostics shows
the error with the servo id, and once the fault clears the arm takes commands again.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import JointState

from so100_driver.calibration import default_calibration_path, load_calibration
from so100_driver.joints import JOINT_NAMES, SO100_JOINTS
from so100_driver.testing.arm_rig import arm_rig, positions, trajectory
from so100_driver.testing.ros_harness import wait_until

pytestmark = pytest.mark.dds
CAL = load_calibration(default_calibration_path())
LOWER = np.array([j.lower for j in SO100_JOINTS])
UPPER = np.array([j.upper for j in SO100_JOINTS])


@pytest.fixture(scope="module")
def rig():
    with arm_rig(watchdog_timeout=0.5, control_rate=100.0) as rig:
        yield rig


def diagnostic_error(rig, joint: str, servo_id: int, words: str = ""):
    """The message of a recent ERROR status for `joint`, naming its servo, containing `words`; else None."""
    for array in rig["state"]["diag"][-6:]:
        for status in array.status:
            if (
                status.name.endswith(joint)
                and status.level == DiagnosticStatus.ERROR
                and status.hardware_id == f"servo {servo_id}"
                and words in status.message
            ):
                return status.message
    return None


def start_long_move(rig, joint_index: int, delta: float, seconds: float = 2.0) -> np.ndarray:
    """Publish ONE trajectory moving a joint by `delta` over `seconds`; return once it is visibly moving."""
    start = positions(rig)
    target = start.copy()
    target[joint_index] += delta
    rig["traj_pub"].publish(trajectory(target, seconds))
    moved = lambda: abs(positions(rig)[joint_index] - start[joint_index]) > 0.05  # noqa: E731
    wait_until(moved, 5, rig["spin"], f"motion toward {target} ({rig['node'].tail(5)})")
    return target


def goals_on_bus(rig, since: float) -> list[tuple[int, ...]]:
    """Every goal vector (ticks, servo order 1..6) sync-written at or after `since` (monotonic s)."""
    return [
        tuple(int.from_bytes(e[i], "little") for i in sorted(e))
        for t, e in list(rig["bus"].sync_writes)
        if t >= since and len(e) == len(JOINT_NAMES)
    ]


def assert_holding_still(rig, seconds: float = 0.5) -> None:
    t0 = time.monotonic()
    before = positions(rig)
    rig["spin_for"](seconds)
    goals = set(goals_on_bus(rig, t0))
    assert len(goals) <= 1, f"goals still changing while holding: {sorted(goals)[:3]}..."
    assert np.allclose(positions(rig), before, atol=0.005), f"moved from {before} to {positions(rig)}"
    assert np.all(positions(rig) >= LOWER - 0.01) and np.all(positions(rig) <= UPPER + 0.01)
    assert rig["node"].alive(), rig["node"].tail()


def assert_commands_accepted_again(rig, joint: str = "wrist_flex") -> None:
    k = list(JOINT_NAMES).index(joint)
    goal = 0.3 if positions(rig)[k] < 0.1 else -0.3

    def reached():
        rig["cmd_pub"].publish(JointState(name=[joint], position=[goal]))
        return abs(positions(rig)[k] - goal) < 0.02

    wait_until(reached, 8, rig["spin"], f"{joint} commanded to {goal} after recovery ({rig['node'].tail(5)})")
    # Let the node drain the joint_commands still queued: taken after the next test's trajectory (another
    # topic, no ordering between them) they would replace it.
    rig["spin_for"](0.3)


def test_overload_mid_trajectory_holds_reports_and_recovers(rig):
    servo = rig["bus"].servo(3)
    target = start_long_move(rig, 2, 0.8)
    servo.error_bits = 32  # overload: the servo stops driving and says so in every status packet
    try:
        message = wait_until(
            lambda: diagnostic_error(rig, "elbow_flex", 3, "overload"), 5, rig["spin"], "overload in /diagnostics"
        )
        assert "servo 3" in message
        assert_holding_still(rig)
        assert abs(positions(rig)[2] - target[2]) > 0.1, "the trajectory went on despite the overload"
    finally:
        servo.error_bits = 0
    wait_until(lambda: "answers again" in rig["node"].tail(40), 5, rig["spin"], "recovery logged")
    assert_commands_accepted_again(rig)


def test_serial_port_lost_then_back(rig):
    bus = rig["bus"]
    start_long_move(rig, 0, -0.6)
    bus.disconnect()
    lost_at = time.monotonic()
    before_loss = np.array(goals_on_bus(rig, 0.0)[-1])
    try:
        message = wait_until(
            lambda: diagnostic_error(rig, "shoulder_pan", 1, "lost"), 5, rig["spin"], "port loss in /diagnostics"
        )
        assert "servo bus" in message
        rig["spin_for"](0.5)
        assert rig["node"].alive(), rig["node"].tail()
    finally:
        bus.reconnect()
    wait_until(lambda: "reopened" in rig["node"].tail(40), 5, rig["spin"], "port reopened")
    # Back on the bus it resumes holding where it was last sent: no jump to a stale or new goal.
    rig["spin_for"](0.3)
    after = set(goals_on_bus(rig, lost_at))
    assert len(after) == 1, f"goals changed after the port came back: {sorted(after)[:3]}"
    # The held goal is the last one sent, or the one computed as the port vanished (one 10 ms step further).
    assert np.abs(np.array(after.pop()) - before_loss).max() <= 25, "jumped after the port came back"
    assert_holding_still(rig)
    assert_commands_accepted_again(rig)


def test_corrupt_replies_one_retried_persistent_reported(rig):
    bus = rig["bus"]
    # One corrupt reply mid-trajectory: retried at once, the trajectory runs to its end.
    target = start_long_move(rig, 1, 0.4, seconds=1.0)
    bus.servo(2).corrupt_replies = 1
    wait_until(
        lambda: abs(positions(rig)[1] - target[1]) < 0.01,
        5,
        rig["spin"],
        f"the end despite one bad packet ({rig['node'].tail(8)})",
    )
    # Every reply of servo 2 corrupt: reported, the arm holds.
    start_long_move(rig, 1, -0.6)
    bus.servo(2).corrupt_replies = -1
    try:
        message = wait_until(
            lambda: diagnostic_error(rig, "shoulder_lift", 2), 5, rig["spin"], "corrupt replies in /diagnostics"
        )
        assert "servo 2" in message
        assert_holding_still(rig)
    finally:
        bus.servo(2).corrupt_replies = 0
    assert_commands_accepted_again(rig)
