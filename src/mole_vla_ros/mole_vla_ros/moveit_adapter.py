"""MoveIt 2 where it helps the policy, kept thin: moveit_py only exists on full ROS installs (import-guarded).

- `move_group_parameters(arm)`: everything move_group needs (robot_description with the ros2_control block,
  SRDF, kinematics, joint limits, the OMPL pipeline, the controllers), from config/moveit/<arm>/ and
  config/ros2_control/; launch/moveit.launch.py passes it to move_group.
- `named_states(arm)` and `named_state_trajectory(...)`: a named SRDF state (`home`, `ready`) as a timed
  trajectory at the safety layer's speed, so a policy can start an instruction from a known pose on any install;
  `MoveItNamedStateMover` does the same through MoveIt's planner (collision-aware) where moveit_py is installed.
- Planning-scene validation of action chunks: `execution.collision_check.MoveItChunkChecker`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mole_vla_ros.bringup import config_dir
from so100_driver.joints import JOINT_NAMES, joints_for
from so100_driver.ros2_control import HARDWARE


def moveit_dir(arm: str) -> Path:
    joints_for(arm)  # raises on an unknown arm
    return config_dir() / "moveit" / arm


def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def move_group_parameters(arm: str = "so100", hardware: str = "mock") -> dict[str, Any]:
    """move_group's parameters, as MoveIt's own launch helpers (moveit_configs_utils) lay them out."""
    if hardware not in HARDWARE:
        raise ValueError(f"hardware must be one of {list(HARDWARE)}, got {hardware!r}")
    folder = moveit_dir(arm)
    ompl = _yaml(folder / "ompl_planning.yaml")
    return {
        "robot_description": (config_dir() / "ros2_control" / f"{arm}_{hardware}.urdf").read_text(),
        "robot_description_semantic": (folder / f"{arm}.srdf").read_text(),
        "robot_description_kinematics": _yaml(folder / "kinematics.yaml"),
        "robot_description_planning": _yaml(folder / "joint_limits.yaml"),
        "planning_pipelines": {"pipeline_names": ["ompl"]},
        "ompl": ompl,
        **_yaml(folder / "moveit_controllers.yaml"),
        "publish_robot_description_semantic": True,
        "publish_planning_scene": True,
        "publish_geometry_updates": True,
        "publish_state_updates": True,
        "publish_transforms_updates": True,
    }


def named_states(arm: str = "so100") -> dict[str, dict[str, float]]:
    """state name -> joint -> position (rad), for every group_state of the arm's SRDF."""
    root = ET.fromstring((moveit_dir(arm) / f"{arm}.srdf").read_text())
    return {
        state.attrib["name"]: {j.attrib["name"]: float(j.attrib["value"]) for j in state.findall("joint")}
        for state in root.findall("group_state")
    }


def named_state_trajectory(
    arm: str, state: str, current: np.ndarray, speed_scale: float = 0.5, fps: float = 30.0
) -> tuple[np.ndarray, np.ndarray]:
    """A straight joint-space move from `current` (6 positions, rad) to the named state.

    Joints the state does not name keep their position. The duration makes the slowest joint run at
    `speed_scale` x its velocity cap (joints.py). Returns (times from now, s, shape (N,); positions (N, 6)).
    Raises ValueError on an unknown state or a bad current position.
    """
    states = named_states(arm)
    if state not in states:
        raise ValueError(f"unknown named state {state!r}; the {arm} SRDF has {sorted(states)}")
    if not 0 < speed_scale <= 1:
        raise ValueError(f"speed_scale must be in (0, 1], got {speed_scale}")
    q0 = np.asarray(current, dtype=float).reshape(-1)
    if q0.shape != (len(JOINT_NAMES),) or not np.all(np.isfinite(q0)):
        raise ValueError(f"current must be {len(JOINT_NAMES)} finite positions, got {current!r}")
    specs = joints_for(arm)
    goal = np.array([states[state].get(name, q0[i]) for i, name in enumerate(JOINT_NAMES)])
    velocity = np.array([s.max_velocity for s in specs]) * speed_scale
    duration = float(np.max(np.abs(goal - q0) / velocity))
    steps = max(1, int(np.ceil(duration * fps)))
    times = np.arange(1, steps + 1) / fps
    fraction = np.clip(times / max(duration, 1e-9), 0.0, 1.0)[:, None]
    return times, q0 + fraction * (goal - q0)


class MoveItNamedStateMover:
    """Plans and executes a move to a named state with MoveIt (collision-aware). Needs moveit_py."""

    def __init__(self, moveit: Any = None, group: str = "arm") -> None:
        try:
            from moveit.planning import MoveItPy
        except ImportError as err:
            raise RuntimeError(
                "moving with MoveIt needs moveit_py (apt install ros-$ROS_DISTRO-moveit-py); without it use "
                "named_state_trajectory() on the arm's joint_trajectory topic"
            ) from err
        self.moveit = moveit if moveit is not None else MoveItPy(node_name="mole_named_state")
        self.component = self.moveit.get_planning_component(group)

    def move_to(self, state: str) -> None:
        self.component.set_start_state_to_current_state()
        self.component.set_goal_state(configuration_name=state)
        plan = self.component.plan()
        if not plan:
            raise RuntimeError(f"MoveIt found no plan to {state!r}")
        self.moveit.execute(plan.trajectory, controllers=[])


def named_state_error(arm: str, state: str, current: np.ndarray) -> tuple[float, str]:
    """How far `current` (6 positions, rad) is from the named state: (largest |error| over the joints the state
    names, that joint's name). Raises ValueError on an unknown state."""
    states = named_states(arm)
    if state not in states:
        raise ValueError(f"unknown named state {state!r}; the {arm} SRDF has {sorted(states)}")
    q = np.asarray(current, dtype=float).reshape(-1)
    errors = {name: abs(q[JOINT_NAMES.index(name)] - value) for name, value in states[state].items()}
    joint = max(errors, key=errors.get)
    return float(errors[joint]), joint
