"""Tasks of the pick-and-place scene: instruction text <-> task, seeded cube placement, success detectors.

The ROS sim node hears only the instruction text, so `parse_instruction` must accept what `Task.instruction`
writes (and the usual variants a person types); everything else here is pure numpy, no MuJoCo, no ROS.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from so100_driver.sim.scene import CUBE_COLORS, CUBE_HALF

TASK_KINDS = ("pick", "stack")

LIFT_HEIGHT = 0.05  # m, cube centre above the table for "picked" (it rests at 0.015)
HOLD_TIME = 0.5  # s a condition must hold before it counts as success
STACK_XY_TOL = 0.015  # m
STACK_Z_TOL = 0.008  # m

# Cubes spawn in an arc in front of the arm, inside the reach of a top-down grasp.
SPAWN_RADIUS = (0.13, 0.22)  # m from the shoulder_pan axis
SPAWN_BEARING = (-0.75, 0.75)  # rad either side of straight ahead
MIN_CUBE_SPACING = 0.06  # m between cube centres, so the open jaws fit between cubes


@dataclass(frozen=True)
class Task:
    """`pick` lifts `cube`; `stack` puts `cube` on top of `target`. Colours are keys of CUBE_COLORS."""

    kind: str
    cube: str
    target: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"unknown task kind {self.kind!r}; expected one of {TASK_KINDS}")
        for colour in (self.cube, self.target):
            if colour is not None and colour not in CUBE_COLORS:
                raise ValueError(f"unknown cube colour {colour!r}; the scene has {list(CUBE_COLORS)}")
        if (self.kind == "stack") != (self.target is not None) or self.cube == self.target:
            raise ValueError(f"a stack task needs two different cubes, a pick task one: {self}")

    @property
    def instruction(self) -> str:
        if self.kind == "pick":
            return f"pick up the {self.cube} cube"
        return f"put the {self.cube} cube on the {self.target} one"


_COLOUR_RE = "|".join(CUBE_COLORS)
_STACK_RE = re.compile(
    rf"\b(?:put|place|stack|set)\b.*?\b({_COLOUR_RE})\b.*?\b(?:on|onto|on top of)\b.*?\b({_COLOUR_RE})\b"
)
_PICK_RE = re.compile(rf"\b(?:pick|grab|lift|take|grasp)\b.*?\b({_COLOUR_RE})\b")


def parse_instruction(text: str) -> Task:
    """The task an instruction asks for. Raises ValueError (quoting the text) when it names no known task."""
    lowered = " ".join(str(text).lower().split())
    match = _STACK_RE.search(lowered)
    if match:
        return Task("stack", match.group(1), match.group(2))
    match = _PICK_RE.search(lowered)
    if match:
        return Task("pick", match.group(1))
    raise ValueError(
        f"cannot parse instruction {text!r}: expected e.g. 'pick up the red cube' or "
        f"'put the blue cube on the green one' (colours: {', '.join(CUBE_COLORS)})"
    )


def sample_task(rng: np.random.Generator, kinds: tuple[str, ...] = TASK_KINDS) -> Task:
    colours = list(CUBE_COLORS)
    kind = kinds[int(rng.integers(len(kinds)))]
    order = rng.permutation(len(colours))
    if kind == "pick":
        return Task("pick", colours[order[0]])
    return Task("stack", colours[order[0]], colours[order[1]])


def place_cubes(rng: np.random.Generator, count: int = len(CUBE_COLORS)) -> np.ndarray:
    """(count, 3) cube poses on the table: x, y (m) and yaw (rad), at least MIN_CUBE_SPACING apart."""
    poses: list[tuple[float, float, float]] = []
    for _attempt in range(10_000):
        radius = rng.uniform(*SPAWN_RADIUS)
        bearing = rng.uniform(*SPAWN_BEARING)
        x, y = radius * math.cos(bearing), radius * math.sin(bearing)
        if all(math.hypot(x - px, y - py) >= MIN_CUBE_SPACING for px, py, _ in poses):
            poses.append((x, y, rng.uniform(-math.pi / 4, math.pi / 4)))
            if len(poses) == count:
                return np.array(poses)
    raise RuntimeError(f"could not place {count} cubes {MIN_CUBE_SPACING} m apart in the spawn area")


class SuccessDetector:
    """Tracks one task over an episode: success once its condition has held for HOLD_TIME seconds.

    `update(time, cube_positions, gripper_touching)` takes the cube centres (colour -> xyz, m) and, for stacking,
    whether the gripper still touches the moved cube (a stack only counts once released).
    """

    def __init__(self, task: Task) -> None:
        self.task = task
        self._since: float | None = None
        self.succeeded = False

    def condition(self, cubes: dict[str, np.ndarray], gripper_touching: bool) -> bool:
        cube = cubes[self.task.cube]
        if self.task.kind == "pick":
            return bool(cube[2] > LIFT_HEIGHT)
        below = cubes[self.task.target]
        xy_ok = math.hypot(cube[0] - below[0], cube[1] - below[1]) < STACK_XY_TOL
        z_ok = abs(cube[2] - below[2] - 2 * CUBE_HALF) < STACK_Z_TOL
        return bool(xy_ok and z_ok and not gripper_touching)

    def update(self, time: float, cubes: dict[str, np.ndarray], gripper_touching: bool = False) -> bool:
        if self.condition(cubes, gripper_touching):
            if self._since is None:
                self._since = time
            if time - self._since >= HOLD_TIME - 1e-9:
                self.succeeded = True
        else:
            self._since = None
        return self.succeeded
