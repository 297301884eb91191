"""ROS-free logic behind the trajectory interfaces of arm_node (topic and FollowJointTrajectory action).

- `trajectory_from_message` turns a trajectory_msgs/JointTrajectory (duck-typed: anything with the same fields)
  into an `arm.Trajectory` on the controller's clock;
- `GoalMonitor` checks a FollowJointTrajectory goal while it runs: path tolerance, goal tolerance at the end,
  goal time tolerance, and gives the result code and a readable error string, as control_msgs defines them.

The action server in arm_node is a thin adapter over these; it only exists where control_msgs imports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from so100_driver.arm import CommandRejectedError, Trajectory, TrajectoryPoint

# control_msgs/action/FollowJointTrajectory result codes (copied so this module needs no control_msgs).
SUCCESSFUL = 0
INVALID_GOAL = -1
INVALID_JOINTS = -2
OLD_HEADER_TIMESTAMP = -3
PATH_TOLERANCE_VIOLATED = -4
GOAL_TOLERANCE_VIOLATED = -5


def duration_to_seconds(duration: Any) -> float:
    """builtin_interfaces/Duration or Time (sec, nanosec) -> seconds."""
    return float(duration.sec) + float(duration.nanosec) * 1e-9


def trajectory_from_message(msg: Any, clock_now: float, ros_now: float) -> Trajectory:
    """A JointTrajectory message -> Trajectory on the controller clock.

    A zero header stamp means "start now" (JointTrajectoryController's convention); otherwise the stamp (ROS time,
    `ros_now` is the node's ROS time now) is mapped onto the controller clock (`clock_now`).
    Raises CommandRejectedError on malformed messages (no names, lengths that do not match the names).
    """
    names = tuple(msg.joint_names)
    if not names:
        raise CommandRejectedError("trajectory names no joints")
    stamp = duration_to_seconds(msg.header.stamp)
    start = clock_now if stamp == 0.0 else clock_now + (stamp - ros_now)
    points = []
    for k, point in enumerate(msg.points):
        if len(point.positions) != len(names):
            raise CommandRejectedError(
                f"trajectory point {k} has {len(point.positions)} positions for {len(names)} joints {list(names)}"
            )
        velocities = None
        if len(point.velocities) > 0:
            if len(point.velocities) != len(names):
                raise CommandRejectedError(
                    f"trajectory point {k} has {len(point.velocities)} velocities for {len(names)} joints"
                )
            velocities = np.asarray(point.velocities, dtype=float)
        points.append(
            TrajectoryPoint(
                time_from_start=duration_to_seconds(point.time_from_start),
                positions=np.asarray(point.positions, dtype=float),
                velocities=velocities,
            )
        )
    return Trajectory(joint_names=names, points=points, start_time=start)


@dataclass(frozen=True)
class Tolerances:
    """Per-joint position tolerances (rad, 0 = not checked) and the goal time tolerance (s, 0 = default)."""

    path: np.ndarray  # (J,)
    goal: np.ndarray  # (J,)
    goal_time: float

    @classmethod
    def from_messages(
        cls,
        joint_names: Sequence[str],
        path_tolerance: Sequence[Any],
        goal_tolerance: Sequence[Any],
        goal_time_tolerance: float,
        default_goal: float = 0.05,
        default_goal_time: float = 0.5,
    ) -> Tolerances:
        """From control_msgs/JointTolerance lists (name, position): unnamed joints get the defaults."""
        index = {n: i for i, n in enumerate(joint_names)}
        path = np.zeros(len(joint_names))
        goal = np.full(len(joint_names), default_goal)
        for target, entries in ((path, path_tolerance), (goal, goal_tolerance)):
            for entry in entries:
                if entry.name not in index:
                    raise CommandRejectedError(f"tolerance for unknown joint {entry.name!r}")
                if not math.isfinite(entry.position):
                    raise CommandRejectedError(f"tolerance for {entry.name} must be finite, got {entry.position}")
                # control_msgs JointTolerance: 0 = the default, negative = not checked.
                if entry.position > 0:
                    target[index[entry.name]] = entry.position
                elif entry.position < 0:
                    target[index[entry.name]] = 0.0 if target is path else np.inf
        goal_time = goal_time_tolerance if goal_time_tolerance > 0 else default_goal_time
        return cls(path=path, goal=goal, goal_time=goal_time)


class GoalMonitor:
    """Decides when a running FollowJointTrajectory goal ends, and how."""

    def __init__(self, joint_names: Sequence[str], end_time: float, tolerances: Tolerances) -> None:
        self.joint_names = tuple(joint_names)
        self.end_time = end_time
        self.tolerances = tolerances

    def check(self, now: float, desired: np.ndarray, actual: np.ndarray) -> tuple[int, str] | None:
        """None while running; (result code, error string) when done (code 0 = success)."""
        error = np.abs(np.asarray(actual) - np.asarray(desired))
        path = self.tolerances.path
        bad = (path > 0) & (error > path)
        if bad.any():
            return PATH_TOLERANCE_VIOLATED, "path tolerance violated: " + self._describe(bad, error, path)
        if now < self.end_time:
            return None
        goal = self.tolerances.goal
        off = error > goal
        if not off.any():
            return SUCCESSFUL, ""
        if now > self.end_time + self.tolerances.goal_time:
            return GOAL_TOLERANCE_VIOLATED, "goal tolerance violated: " + self._describe(off, error, goal)
        return None

    def _describe(self, bad: np.ndarray, error: np.ndarray, tolerance: np.ndarray) -> str:
        return ", ".join(
            f"{name} off by {error[i]:.4f} rad (tolerance {tolerance[i]:.4f})"
            for i, name in enumerate(self.joint_names)
            if bad[i]
        )
