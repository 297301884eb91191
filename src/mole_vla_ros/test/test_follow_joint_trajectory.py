"""Executor output_mode follow_joint_trajectory: which points go out as FollowJointTrajectory goals, timed from now,
the gripper split, pre-emption of the previous goal, and the start-up error where control_msgs is missing."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter

from mole_vla_ros import conversions
from mole_vla_ros.execution.follow_joint_trajectory import GoalBook, TrajectoryGoal, plan_goals
from so100_driver.joints import JOINT_NAMES

ARM = "joint_trajectory_controller/follow_joint_trajectory"
GRIPPER = "gripper_controller/follow_joint_trajectory"
NAMES = tuple(JOINT_NAMES)


def _plan(n: int = 10, t0: float = 100.0, fps: float = 30.0):
    times = t0 + np.arange(1, n + 1) / fps
    positions = np.linspace(np.zeros(6), np.full(6, 0.3), n)
    return times, positions


def test_points_already_overtaken_are_dropped_and_the_rest_timed_from_now():
    times, positions = _plan()
    now = times[3]  # inference latency overtook the first four points (the fourth is due exactly now)
    (goal,) = plan_goals(times, positions, now, NAMES, ARM)
    assert goal.action == ARM and goal.joint_names == NAMES
    np.testing.assert_allclose(goal.time_from_start, times[4:] - now)
    np.testing.assert_array_equal(goal.positions, positions[4:])
    assert goal.time_from_start[0] > 0 and np.all(np.diff(goal.time_from_start) > 0)


def test_all_points_in_the_past_send_nothing():
    times, positions = _plan()
    assert plan_goals(times, positions, times[-1], NAMES, ARM) == []


def test_gripper_goes_to_its_own_controller():
    times, positions = _plan()
    positions[:, -1] = 0.9
    arm, gripper = plan_goals(times, positions, times[0] - 0.5, NAMES, ARM, GRIPPER)
    assert arm.action == ARM and arm.joint_names == NAMES[:-1] and arm.positions.shape == (10, 5)
    assert gripper.action == GRIPPER and gripper.joint_names == ("gripper",) and gripper.positions.shape == (10, 1)
    np.testing.assert_array_equal(gripper.positions[:, 0], 0.9)
    np.testing.assert_array_equal(arm.time_from_start, gripper.time_from_start)


def test_bad_plans_raise():
    times, positions = _plan()
    with pytest.raises(ValueError, match="do not fit"):
        plan_goals(times, positions[:, :5], 0.0, NAMES, ARM)
    with pytest.raises(ValueError, match="increasing"):
        plan_goals(times[::-1], positions, 0.0, NAMES, ARM)


def test_a_newer_accepted_goal_cancels_the_older_one_only_once_accepted():
    book = GoalBook()
    first = book.sent(ARM)
    assert book.accepted(ARM, first, "h1") == []
    second = book.sent(ARM)
    assert book.active(ARM) == [first, second]  # the old goal keeps running until the new one is accepted
    assert book.accepted(ARM, second, "h2") == ["h1"]
    assert book.active(ARM) == [second]
    other = book.sent(GRIPPER)
    assert book.accepted(GRIPPER, other, "g1") == []  # controllers are independent
    book.finished(ARM, second)
    assert book.active(ARM) == []


def test_an_older_goal_accepted_after_a_newer_one_is_cancelled_itself():
    book = GoalBook()
    old, new = book.sent(ARM), book.sent(ARM)
    assert book.accepted(ARM, new, "h_new") == []
    assert book.accepted(ARM, old, "h_old") == ["h_old"]
    assert book.active(ARM) == [new]


@pytest.fixture
def ros():
    with rclpy.init():
        yield


@pytest.mark.skipif(importlib.util.find_spec("control_msgs") is not None, reason="control_msgs installed")
def test_without_control_msgs_the_mode_fails_at_start_up_naming_the_package(ros):
    from mole_vla_ros.nodes.chunk_executor_node import ChunkExecutorNode

    with pytest.raises(RuntimeError, match="control_msgs"):
        ChunkExecutorNode(parameter_overrides=[Parameter("output_mode", value="follow_joint_trajectory")])


class RecordingOutput:
    """Stands in for the rclpy action glue: records what the executor would send."""

    def __init__(self, gripper: str = "") -> None:
        self.actions = (ARM, gripper)
        self.sent: list[tuple[list[TrajectoryGoal], float]] = []

    def send(self, goals, now):
        self.sent.append((goals, now))


def test_executor_sends_each_accepted_chunk_without_the_overtaken_points(ros):
    from mole_vla_ros.nodes.chunk_executor_node import ChunkExecutorNode

    # Dropping overtaken points is what a streaming arm needs; by executed steps (the default) a first chunk would
    # restart from its arrival, the arm having held still, so this counts them by the wall clock.
    node = ChunkExecutorNode(parameter_overrides=[Parameter("stale_clock", value="wall")])
    try:
        node._goal_output = output = RecordingOutput(GRIPPER)
        now = node.get_clock().now().nanoseconds * 1e-9
        actions = np.linspace([0.0, 0.0, 0.0, 0.0, 0.0, 0.2], [0.05, 0.0, 0.0, 0.0, 0.0, 0.25], 10)
        latency = 4.5 / 30.0  # observation 4.5 steps ago: points 0..3 are overtaken
        stamp = conversions.seconds_to_stamp(now - latency)
        node._on_chunk(conversions.build_action_chunk(actions, stamp, fps=30.0, chunk_id=0))
        (goals, sent_at) = output.sent[-1]
        arm, gripper = goals
        assert len(arm.time_from_start) == 6 and gripper.joint_names == ("gripper",)
        np.testing.assert_allclose(arm.positions, actions[4:, :5], atol=1e-9)
        np.testing.assert_allclose(arm.time_from_start, now - latency + np.arange(5, 11) / 30.0 - sent_at, atol=1e-6)
        # A rejected chunk sends nothing; the next good one supersedes the plan.
        bad = actions.copy()
        bad[:, 0] = 5.0
        node._on_chunk(conversions.build_action_chunk(bad, stamp, fps=30.0, chunk_id=1))
        assert len(output.sent) == 1
        node._on_chunk(conversions.build_action_chunk(actions, conversions.seconds_to_stamp(now), fps=30.0, chunk_id=2))
        assert len(output.sent) == 2
    finally:
        node.destroy_node()
