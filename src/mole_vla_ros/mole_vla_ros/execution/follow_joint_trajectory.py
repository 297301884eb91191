"""What the chunk executor sends as control_msgs/action/FollowJointTrajectory goals, without ROS.

The executor's `output_mode: follow_joint_trajectory` hands each accepted chunk (after the queue merged it with
what was already planned) to a ros2_control JointTrajectoryController as one action goal, instead of streaming
commands. The decisions live here, unit tested where control_msgs cannot be installed:

- `plan_goals`: which points go out (only those still in the future: inference latency has overtaken the rest),
  their `time_from_start` relative to the goal's stamp (now), and the split into an arm goal and a gripper goal
  when the gripper runs on its own controller.
- `GoalBook`: a new chunk's goal supersedes the previous one on the same controller. A stock JTC already pre-empts
  its active goal when a new one is accepted; cancelling the older goal only once the newer one is ACCEPTED covers
  controllers that do not, and never leaves the arm without a goal in between (cancelling first would make the
  JTC stop and hold, then jump into the new goal).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np

MISSING_CONTROL_MSGS = (
    "output_mode follow_joint_trajectory needs the control_msgs package (control_msgs/action/FollowJointTrajectory), "
    "which is not installed: on a ROS install `apt install ros-$ROS_DISTRO-control-msgs`; without it use "
    "output_mode trajectory (JointTrajectory on <controller>/joint_trajectory), which a JointTrajectoryController "
    "accepts as well"
)


def follow_joint_trajectory_type() -> Any:
    """control_msgs.action.FollowJointTrajectory, or RuntimeError saying what to install."""
    try:
        return importlib.import_module("control_msgs.action").FollowJointTrajectory
    except (ImportError, AttributeError) as err:
        raise RuntimeError(MISSING_CONTROL_MSGS) from err


@dataclass(frozen=True)
class TrajectoryGoal:
    """One FollowJointTrajectory goal: `positions[i]` (rad, columns = `joint_names`) reached `time_from_start[i]`
    seconds after the goal's stamp."""

    action: str  # action name, e.g. joint_trajectory_controller/follow_joint_trajectory
    joint_names: tuple[str, ...]
    time_from_start: np.ndarray  # (N,), strictly increasing, > 0
    positions: np.ndarray  # (N, len(joint_names))


def plan_goals(
    times: np.ndarray,
    positions: np.ndarray,
    now: float,
    joint_names: tuple[str, ...],
    arm_action: str,
    gripper_action: str = "",
) -> list[TrajectoryGoal]:
    """The goals for the plan (`times` absolute seconds, (N,); `positions` (N, J) in `joint_names` order) at `now`.

    Points at or before `now` are dropped: the arm never moves backwards in time. With `gripper_action`, the last
    column (the gripper) goes in a goal of its own, as a stock JTC over the five arm joints rejects a goal that
    names the gripper. Returns [] when no point is left. Raises ValueError on mismatched shapes.
    """
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape != (len(times), len(joint_names)):
        raise ValueError(f"positions {positions.shape} do not fit {len(times)} times x {len(joint_names)} joints")
    if np.any(np.diff(times) <= 0) or not np.all(np.isfinite(times)):
        raise ValueError("times must be finite and strictly increasing")
    future = times > now
    offsets, points = times[future] - now, positions[future]
    if len(offsets) == 0:
        return []
    if not gripper_action:
        return [TrajectoryGoal(arm_action, tuple(joint_names), offsets, points)]
    return [
        TrajectoryGoal(arm_action, tuple(joint_names[:-1]), offsets, points[:, :-1]),
        TrajectoryGoal(gripper_action, tuple(joint_names[-1:]), offsets.copy(), points[:, -1:]),
    ]


class GoalBook:
    """The goals sent per controller, by sequence number, and which older ones to cancel once a newer one is
    accepted. Not thread-safe: call from one callback group."""

    def __init__(self) -> None:
        self._next = 0
        self._active: dict[str, dict[int, Any]] = {}  # action -> seq -> goal handle (None until accepted)
        self._newest_accepted: dict[str, int] = {}

    def sent(self, action: str) -> int:
        """Record a goal being sent on `action`; returns its sequence number."""
        seq = self._next
        self._next += 1
        self._active.setdefault(action, {})[seq] = None
        return seq

    def accepted(self, action: str, seq: int, handle: Any) -> list[Any]:
        """The goal `seq` was accepted: returns the handles to cancel, older accepted goals on the same action, or
        this very goal when a newer one was accepted first (responses can arrive out of order)."""
        goals = self._active.setdefault(action, {})
        newest = self._newest_accepted.get(action, -1)
        if seq < newest:
            goals.pop(seq, None)
            return [handle]
        self._newest_accepted[action] = seq
        goals[seq] = handle
        older = [s for s in goals if s < seq]
        return [h for h in (goals.pop(s) for s in older) if h is not None]

    def finished(self, action: str, seq: int) -> None:
        """The goal ended (rejected, succeeded, aborted, cancelled): forget it."""
        self._active.get(action, {}).pop(seq, None)

    def active(self, action: str) -> list[int]:
        return sorted(self._active.get(action, {}))
