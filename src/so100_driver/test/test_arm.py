"""ArmController: interpolation, replacement from the start time, past points dropped, watchdog, faults, limits."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from so100_driver.arm import ArmController, CommandRejectedError, ControlLoop, Trajectory, TrajectoryPoint
from so100_driver.backend import JointReading
from so100_driver.follow_trajectory import (
    GOAL_TOLERANCE_VIOLATED,
    PATH_TOLERANCE_VIOLATED,
    SUCCESSFUL,
    GoalMonitor,
    Tolerances,
)
from so100_driver.joints import JOINT_NAMES, SO100_JOINTS
from so100_driver.safety import SafetyLayer, SafetyLimits

J = len(JOINT_NAMES)
DT = 0.01


class InstantBackend:
    """Goes exactly where it is told; faults are injected by the test."""

    joint_names = JOINT_NAMES

    def __init__(self):
        self.q = np.zeros(J)
        self.sent: list[np.ndarray] = []
        self.faults: dict[str, str] = {}
        self.torque = False

    def read(self):
        return JointReading(0.0, self.q.copy(), np.zeros(J), np.zeros(J), dict(self.faults))

    def write_goal(self, positions):
        self.sent.append(positions.copy())
        self.q = positions.copy()

    def set_torque(self, enabled):
        self.torque = enabled

    def close(self):
        pass


@pytest.fixture
def arm():
    clock = [0.0]
    backend = InstantBackend()
    limits = SafetyLimits.from_joints(SO100_JOINTS, max_acceleration=1000.0, max_step=1.0)
    controller = ArmController(backend, SafetyLayer(limits, watchdog_timeout=0.5), clock=lambda: clock[0])
    controller.start()

    def run(seconds):
        for _ in range(round(seconds / DT)):
            clock[0] += DT
            controller.step()

    controller.run, controller.now, controller.backend_ = run, clock, backend
    return controller


def traj(points, start, names=("shoulder_pan",), velocities=None):
    return Trajectory(
        tuple(names),
        [
            TrajectoryPoint(t, np.atleast_1d(np.array(p, dtype=float)), None if velocities is None else velocities[k])
            for k, (t, p) in enumerate(points)
        ],
        start,
    )


def test_linear_interpolation_between_points(arm):
    arm.set_trajectory(traj([(0.2, 0.2), (0.4, 0.0)], start=0.0))
    arm.run(0.1)
    assert arm.backend_.q[0] == pytest.approx(0.1, abs=1e-6)
    arm.run(0.1)
    assert arm.backend_.q[0] == pytest.approx(0.2, abs=1e-6)
    arm.run(0.1)
    assert arm.backend_.q[0] == pytest.approx(0.1, abs=1e-6)
    assert np.all(arm.backend_.q[1:] == 0.0)  # joints not named hold


def test_cubic_with_velocities_passes_through_points(arm):
    arm.set_trajectory(traj([(0.2, 0.2), (0.4, 0.3)], start=0.0, velocities=[np.array([1.0]), np.array([0.0])]))
    arm.run(0.2)
    assert arm.backend_.q[0] == pytest.approx(0.2, abs=1e-6)
    arm.run(0.2)
    assert arm.backend_.q[0] == pytest.approx(0.3, abs=1e-6)


def test_new_trajectory_replaces_old_only_from_its_start_time(arm):
    arm.set_trajectory(traj([(0.4, 0.4)], start=0.0))
    arm.set_trajectory(traj([(0.2, -0.2)], start=0.2))
    arm.run(0.1)
    assert arm.backend_.q[0] == pytest.approx(0.1, abs=1e-6)  # still the old one
    arm.run(0.1)
    arm.run(0.2)
    assert arm.backend_.q[0] == pytest.approx(-0.2, abs=1e-6)


def test_points_in_the_past_are_dropped_and_all_past_rejected(arm):
    arm.run(0.5)
    arm.set_trajectory(traj([(0.1, 0.9), (0.7, 0.3)], start=0.0))  # first point 0.4 s ago
    arm.run(0.05)
    assert 0 < arm.backend_.q[0] < 0.3  # heading for 0.3, never toward the stale 0.9
    with pytest.raises(CommandRejectedError, match="in the past"):
        arm.set_trajectory(traj([(0.1, 0.5)], start=0.0))


def test_a_trajectory_sent_once_runs_to_its_end_past_the_watchdog_timeout(arm):
    # JointTrajectoryController semantics: one message, 2 s long, with a 0.5 s watchdog.
    arm.set_trajectory(traj([(1.0, 0.5), (2.0, 1.0)], start=0.0))
    arm.run(1.5)
    assert not arm.holding and arm.backend_.q[0] == pytest.approx(0.75, abs=1e-6)
    arm.run(0.6)
    assert arm.backend_.q[0] == pytest.approx(1.0, abs=1e-6)


def test_watchdog_fires_only_timeout_after_the_last_point(arm):
    arm.set_trajectory(traj([(1.0, 0.4)], start=0.0))
    arm.run(1.45)  # 0.45 s after the last point: not yet
    assert not arm.holding
    arm.run(0.1)
    assert arm.holding and "watchdog" in arm.hold_reason
    assert arm.backend_.q[0] == pytest.approx(0.4, abs=1e-6)


def test_replacing_trajectory_sets_the_watchdog_to_its_own_end(arm):
    arm.set_trajectory(traj([(5.0, 1.0)], start=0.0))
    arm.run(0.2)
    arm.set_trajectory(traj([(0.3, 0.2)], start=0.2))  # ends at 0.5 s: the old 5 s end no longer counts
    arm.run(0.75)
    assert not arm.holding
    arm.run(0.1)
    assert arm.holding and "watchdog" in arm.hold_reason


def test_watchdog_holds_a_joint_command_stream_that_stops():
    clock = [0.0]
    backend = InstantBackend()
    limits = SafetyLimits.from_joints(SO100_JOINTS, velocity_scale=0.1)  # 0.3 rad/s: still moving at 0.5 s
    controller = ArmController(backend, SafetyLayer(limits, watchdog_timeout=0.5), clock=lambda: clock[0])
    controller.start()

    def run(seconds):
        for _ in range(round(seconds / DT)):
            clock[0] += DT
            controller.step()

    for _ in range(5):  # streamed for 0.5 s, then silence
        controller.set_target(["shoulder_pan"], [1.5])
        run(0.1)
    run(0.35)  # 0.45 s after the last command (at 0.4 s)
    assert not controller.holding and backend.q[0] < 1.5
    run(0.1)
    held = backend.q[0]
    assert controller.holding and "watchdog" in controller.hold_reason
    run(1.0)
    assert backend.q[0] == held and 0.2 < held < 0.4


def test_targets_clamped_to_limits(arm):
    arm.set_target(["shoulder_pan", "gripper"], [10.0, -10.0])
    arm.run(0.3)
    sent = np.array(arm.backend_.sent)
    assert sent[:, 0].max() <= SO100_JOINTS[0].upper + 1e-12
    assert sent[:, 5].min() >= SO100_JOINTS[5].lower - 1e-12


@pytest.mark.parametrize(
    ("names", "positions", "message"),
    [
        (["elbow"], [0.1], "unknown joint"),
        (["elbow_flex", "elbow_flex"], [0.1, 0.2], "duplicate"),
        (["elbow_flex"], [float("nan")], "non-finite"),
        (["elbow_flex", "gripper"], [0.1], "1 values for 2"),
    ],
)
def test_bad_commands_rejected_clearly(arm, names, positions, message):
    with pytest.raises(CommandRejectedError, match=message):
        arm.set_target(names, positions)


def test_joint_fault_holds_every_joint_and_refuses_commands(arm):
    arm.set_trajectory(traj([(1.0, 1.0)], start=0.0))
    arm.run(0.2)
    arm.backend_.faults = {"wrist_roll": "servo 5 reports overload"}
    arm.run(0.02)
    held = arm.backend_.q.copy()
    arm.run(0.3)
    assert np.array_equal(arm.backend_.q, held) and arm.holding
    with pytest.raises(CommandRejectedError, match="wrist_roll: servo 5 reports overload"):
        arm.set_target(["shoulder_pan"], [0.0])
    arm.backend_.faults = {}
    arm.run(0.02)
    arm.set_target(["shoulder_pan"], [0.0])  # accepted again


def test_estop_latches(arm):
    arm.set_trajectory(traj([(1.0, 1.0)], start=0.0))
    arm.run(0.1)
    arm.estop()
    with pytest.raises(CommandRejectedError, match="e-stop"):
        arm.set_target(["shoulder_pan"], [0.0])
    held = arm.backend_.q.copy()
    arm.run(0.2)
    assert np.array_equal(arm.backend_.q, held)
    arm.reset_estop()
    arm.set_target(["shoulder_pan"], [0.0])


def test_shutdown_holds_then_releases_torque(arm):
    arm.set_trajectory(traj([(1.0, 1.0)], start=0.0))
    arm.run(0.1)
    arm.shutdown(disable_torque=True)
    assert np.array_equal(arm.backend_.sent[-1], arm.backend_.sent[-2]) and not arm.backend_.torque


def test_goal_monitor_results():
    tol = Tolerances(path=np.array([0.1]), goal=np.array([0.01]), goal_time=0.5)
    monitor = GoalMonitor(["shoulder_pan"], end_time=1.0, tolerances=tol)
    assert monitor.check(0.5, np.array([0.3]), np.array([0.25])) is None
    assert monitor.check(0.5, np.array([0.3]), np.array([0.1]))[0] == PATH_TOLERANCE_VIOLATED
    assert monitor.check(1.1, np.array([0.3]), np.array([0.295])) == (SUCCESSFUL, "")
    assert monitor.check(1.2, np.array([0.3]), np.array([0.25])) is None  # within goal time tolerance
    code, text = monitor.check(1.6, np.array([0.3]), np.array([0.25]))
    assert code == GOAL_TOLERANCE_VIOLATED and "shoulder_pan off by 0.05" in text


class CountingBackend(InstantBackend):
    def __init__(self):
        super().__init__()
        self.reads = 0
        self.writer_threads: set[str] = set()

    def read(self):
        self.reads += 1
        return super().read()

    def write_goal(self, positions):
        self.writer_threads.add(threading.current_thread().name)
        super().write_goal(positions)


def test_control_loop_writes_a_new_command_at_once_and_ticks_on_its_own():
    backend = CountingBackend()
    limits = SafetyLimits.from_joints(SO100_JOINTS, max_acceleration=1000.0, max_step=1.0)
    controller = ArmController(backend, SafetyLayer(limits, watchdog_timeout=0.5))
    controller.start()
    steps = []
    loop = ControlLoop(controller, rate=0.5, on_step=lambda result, ticked: steps.append(ticked)).start()
    try:
        first_tick_deadline = time.monotonic() + 2
        while not steps and time.monotonic() < first_tick_deadline:
            time.sleep(0.001)
        assert steps == [True]  # the loop's first tick (then the next is 2 s away)
        writes, reads = len(backend.sent), backend.reads
        loop.command(lambda: controller.set_target(["shoulder_pan"], [0.3]))
        # Written inside the call, by the caller's thread, without a bus read; not left for a tick 2 s away.
        assert len(backend.sent) == writes + 1 and backend.reads == reads
        assert backend.sent[-1][0] > 0 and steps[-1] is False
        assert threading.current_thread().name in backend.writer_threads
        with pytest.raises(CommandRejectedError):
            loop.command(lambda: controller.set_target(["nope"], [0.0]))
        assert len(backend.sent) == writes + 1  # a rejected command writes nothing
    finally:
        loop.stop()
    assert not loop._thread.is_alive()


def test_control_loop_keeps_its_rate():
    backend = CountingBackend()
    limits = SafetyLimits.from_joints(SO100_JOINTS)
    controller = ArmController(backend, SafetyLayer(limits))
    controller.start()
    loop = ControlLoop(controller, rate=100.0, on_step=lambda *_: None).start()
    time.sleep(0.5)
    loop.stop()
    # ~50 ticks; a loaded shared CPU may delay some, but an absolute schedule never drifts to a fraction of it.
    assert 30 <= backend.reads - 1 <= 52
