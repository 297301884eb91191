"""Collision-checked action chunks: one small interface, two implementations.

`ChunkChecker.check(positions)` takes a chunk (H x 6 joint positions, rad, joints.py order) and returns None when
every waypoint is free, else the first `Collision`: the step, the two bodies, how deep, the joint positions there.
- `MujocoChunkChecker`: our generated model (the URDF's boxes) + the table + known obstacles, self-collision on
  every link pair the SRDF does not disable. Works everywhere (MuJoCo is a dependency).
- `MoveItChunkChecker`: MoveIt's planning scene through moveit_py (full ROS installs only; import-guarded), so
  whatever the user put in the scene (octomap, meshes, attached objects) counts.

Only waypoints are checked (as MoveIt's own trajectory validation does with its default segment fraction off):
chunk steps are 33 ms apart, the arm moves at most 0.1 rad between them at the safety layer's velocity cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from so100_driver.collision import TABLE, CollisionModel, Obstacle, checked_self_pairs
from so100_driver.joints import JOINT_NAMES, joints_for
from so100_driver.srdf import parse_disabled_pairs

CHECKERS = ("mujoco", "moveit")


@dataclass(frozen=True)
class Collision:
    """The first colliding waypoint of a chunk."""

    step: int
    body1: str
    body2: str
    depth: float  # m; NaN when the checker does not say
    positions: tuple[float, ...]

    def describe(self) -> str:
        depth = "" if np.isnan(self.depth) else f" ({self.depth * 1e3:.1f} mm deep)"
        joints = ", ".join(f"{n}={v:+.3f}" for n, v in zip(JOINT_NAMES, self.positions, strict=True))
        return f"step {self.step}: {self.body1} collides with {self.body2}{depth} at [{joints}] rad"


class ChunkChecker(Protocol):
    def check(self, positions: np.ndarray) -> Collision | None: ...


def _as_chunk(positions: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    chunk = np.asarray(positions, dtype=float)
    if chunk.ndim != 2 or chunk.shape[1] != len(JOINT_NAMES) or not np.all(np.isfinite(chunk)):
        raise ValueError(f"a chunk is H x {len(JOINT_NAMES)} finite joint positions, got shape {chunk.shape}")
    return chunk


def default_srdf(arm: str) -> Path:
    """config/moveit/<arm>/<arm>.srdf (source tree, else mole_vla_ros's share directory)."""
    from mole_vla_ros.bringup import config_dir

    return config_dir() / "moveit" / arm / f"{arm}.srdf"


class MujocoChunkChecker:
    """Args:
    arm: "so100" or "so101".
    obstacles: boxes in the base_link frame (the table by default).
    srdf: SRDF whose disabled pairs are skipped (default: ours, config/moveit/<arm>/<arm>.srdf).
    tolerance: m; contacts shallower than this are touching, not colliding (faces the model puts flush).
    """

    def __init__(
        self,
        arm: str = "so100",
        obstacles: Sequence[Obstacle] = (TABLE,),
        srdf: Path | None = None,
        tolerance: float = 1e-3,
    ) -> None:
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0 m, got {tolerance}")
        joints_for(arm)
        disabled = parse_disabled_pairs((srdf or default_srdf(arm)).read_text())
        self.tolerance = tolerance
        self.model = CollisionModel(arm, checked_self_pairs(disabled, arm), obstacles)

    def check(self, positions: np.ndarray) -> Collision | None:
        for step, q in enumerate(_as_chunk(positions)):
            for contact in self.model.contacts(q):  # deepest first
                if contact.depth > self.tolerance:
                    return Collision(step, contact.body1, contact.body2, contact.depth, tuple(map(float, q)))
                break
        return None


class MoveItChunkChecker:
    """The planning scene of a running move_group, read through moveit_py (ROS installs with MoveIt 2 only)."""

    def __init__(self, moveit: Any = None, group: str = "arm") -> None:
        try:
            from moveit.core.robot_state import RobotState
            from moveit.planning import MoveItPy
        except ImportError as err:
            raise RuntimeError(
                "collision_checker 'moveit' needs moveit_py (apt install ros-$ROS_DISTRO-moveit-py); "
                "use 'mujoco' where MoveIt is not installed"
            ) from err
        self._robot_state_type = RobotState
        self.moveit = moveit if moveit is not None else MoveItPy(node_name="mole_collision_check")
        self.monitor = self.moveit.get_planning_scene_monitor()
        self.group = group

    def check(self, positions: np.ndarray) -> Collision | None:
        chunk = _as_chunk(positions)
        with self.monitor.read_only() as scene:
            state = self._robot_state_type(scene.robot_model)
            for step, q in enumerate(chunk):
                state.joint_positions = dict(zip(JOINT_NAMES, map(float, q), strict=True))
                state.update()
                if scene.is_state_colliding(robot_state=state, joint_model_group_name=self.group, verbose=False):
                    # moveit_py does not return the contact pair; MoveIt logs it with verbose=True.
                    return Collision(step, "robot", "planning scene", float("nan"), tuple(map(float, q)))
        return None


def make_checker(kind: str, arm: str = "so100", obstacles: Sequence[Obstacle] = (TABLE,)) -> ChunkChecker:
    """A checker by name: "mujoco" or "moveit". Raises ValueError on another name."""
    if kind == "mujoco":
        return MujocoChunkChecker(arm, obstacles)
    if kind == "moveit":
        return MoveItChunkChecker()
    raise ValueError(f"collision checker must be one of {list(CHECKERS)}, got {kind!r}")
