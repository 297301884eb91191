"""`SimEnv`: the MuJoCo SO-100 pick-and-place scene as an in-process, ROS-free environment.

Evaluation and recording call it directly (no DDS, as fast as the CPU allows); the ROS sim node wraps the same
object. One `step(joint_targets)` is one control period (default 30 Hz) of several physics steps.

Servo model: each control period the goal is clamped to the joints.py limits; inside the period the actuator's
setpoint ramps toward the goal at the joint's max velocity (the STS3215 moves to a goal with its own speed
profile, it does not jump), and the position actuator's torque is capped at the servo's stall torque (MJCF).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from so100_driver.description import GRASP_SITE, MODELS_DIR
from so100_driver.joints import joints_for
from so100_driver.sim.scene import CUBE_COLORS, CUBE_HALF
from so100_driver.sim.tasks import SuccessDetector, Task, parse_instruction, place_cubes, sample_task

# Offscreen rendering on a machine without a display: EGL through Mesa works here (osmesa did not). Must be set
# before mujoco is imported; a user's own choice wins.
os.environ.setdefault("MUJOCO_GL", "egl")
import mujoco


@dataclass(frozen=True)
class SimConfig:
    """Args:
    arm: "so100" or "so101".
    control_hz: control rate of `step`, Hz.
    cameras: camera names rendered into obs["images"] ("scene", "wrist"); empty = no rendering.
    width, height: image size, px.
    time_limit: episode length, s (`done` after it).
    task_kinds: kinds sampled when reset() gets no task.
    """

    arm: str = "so100"
    control_hz: float = 30.0
    cameras: tuple[str, ...] = ("scene",)
    width: int = 224
    height: int = 224
    time_limit: float = 12.0
    task_kinds: tuple[str, ...] = ("pick",)

    def __post_init__(self) -> None:
        if not 1.0 <= self.control_hz <= 500.0:
            raise ValueError(f"control_hz {self.control_hz} outside 1..500 Hz")
        if self.width < 16 or self.height < 16 or self.width > 1280 or self.height > 960:
            raise ValueError(f"image size {self.width}x{self.height} outside 16x16..1280x960")


class SimEnv:
    """reset(seed, task) -> obs; step(joint_targets) -> obs; obs = {"images", "state", "time"}."""

    def __init__(self, config: SimConfig | None = None, **overrides: object) -> None:
        self.config = config or SimConfig(**overrides)  # type: ignore[arg-type]
        cfg = self.config
        self.joints = joints_for(cfg.arm)
        self.joint_names = tuple(j.name for j in self.joints)
        self.lower = np.array([j.lower for j in self.joints])
        self.upper = np.array([j.upper for j in self.joints])
        self.max_velocity = np.array([j.max_velocity for j in self.joints])
        self.model = mujoco.MjModel.from_xml_path(str(MODELS_DIR / f"scene_{cfg.arm}.xml"))
        self.data = mujoco.MjData(self.model)
        self.substeps = max(1, round(1.0 / (cfg.control_hz * self.model.opt.timestep)))
        self.dt = self.substeps * self.model.opt.timestep
        self._qadr = np.array([self.model.joint(n).qposadr[0] for n in self.joint_names])
        self._dadr = np.array([self.model.joint(n).dofadr[0] for n in self.joint_names])
        self._act = np.array([self.model.actuator(n).id for n in self.joint_names])
        self._cube_bodies = {c: self.model.body(f"cube_{c}").id for c in CUBE_COLORS}
        self._cube_qadr = {c: self.model.joint(f"cube_{c}").qposadr[0] for c in CUBE_COLORS}
        self._gripper_bodies = {self.model.body(n).id for n in ("gripper_link", "jaw_link")}
        self.grasp_site = self.model.site(GRASP_SITE).id
        for name in cfg.cameras:
            if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, name) < 0:
                raise ValueError(f"unknown camera {name!r}")
        # Made on first render (0.2-0.5 s, once per env), in the thread that renders: a GL context is per thread.
        self._renderer: mujoco.Renderer | None = None
        self.goal = np.zeros(len(self.joints))
        self.task: Task = Task("pick", next(iter(CUBE_COLORS)))
        self._detector = SuccessDetector(self.task)

    # ------------------------------------------------------------------------------------------ episode

    @property
    def instruction(self) -> str:
        return self.task.instruction

    @property
    def time(self) -> float:
        return float(self.data.time)

    @property
    def done(self) -> bool:
        return self.time >= self.config.time_limit - 1e-9

    def set_task(self, task: Task | str) -> None:
        """Change the task (an instruction text is parsed) and restart its success detector."""
        self.task = parse_instruction(task) if isinstance(task, str) else task
        self._detector = SuccessDetector(self.task)

    def reset(self, seed: int, task: Task | str | None = None, observe: bool = True) -> dict | None:
        """New episode: arm at home (zero), cubes at seeded random poses, a task (sampled from seed when None).

        Returns the first observation, or None with `observe=False` (no rendering: a caller outside the render
        thread, such as MujocoBackend's reset service).
        """
        rng = np.random.default_rng(seed)
        mujoco.mj_resetDataKeyframe(self.model, self.data, self.model.key("home").id)
        self.set_task(sample_task(rng, self.config.task_kinds) if task is None else task)
        for (x, y, yaw), colour in zip(place_cubes(rng), CUBE_COLORS, strict=True):
            adr = self._cube_qadr[colour]
            self.data.qpos[adr : adr + 7] = [x, y, CUBE_HALF, np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        self.goal = self.data.qpos[self._qadr].copy()
        self.data.ctrl[self._act] = self.goal
        mujoco.mj_forward(self.model, self.data)
        self.data.time = 0.0
        return self.observation() if observe else None

    def step(self, joint_targets: Sequence[float] | np.ndarray) -> dict:
        """Advance one control period toward `joint_targets` (6 positions, rad; clamped to the limits).

        Raises ValueError (and changes nothing) on a wrong length or a non-finite value.
        """
        self.set_goal(joint_targets)
        self.advance(self.substeps)
        return self.observation()

    def set_goal(self, joint_targets: Sequence[float] | np.ndarray) -> np.ndarray:
        """Validate and clamp a goal; the next physics steps move toward it. Returns the clamped goal."""
        target = np.asarray(joint_targets, dtype=float).reshape(-1)
        if target.shape != (len(self.joints),):
            raise ValueError(
                f"expected {len(self.joints)} joint targets ({', '.join(self.joint_names)}), got shape {target.shape}"
            )
        if not np.all(np.isfinite(target)):
            raise ValueError(f"joint targets must be finite, got {target.tolist()}")
        self.goal = np.clip(target, self.lower, self.upper)
        return self.goal

    def advance(self, substeps: int) -> None:
        """Physics steps toward the current goal, with the servo speed ramp; updates the success detector."""
        max_delta = self.max_velocity * self.model.opt.timestep
        for _ in range(substeps):
            ctrl = self.data.ctrl[self._act]
            self.data.ctrl[self._act] = ctrl + np.clip(self.goal - ctrl, -max_delta, max_delta)
            mujoco.mj_step(self.model, self.data)
        self._detector.update(self.time, self.cube_positions(), self.gripper_touching(self.task.cube))

    # ------------------------------------------------------------------------------------------ reading

    def success(self) -> bool:
        return self._detector.succeeded

    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self._qadr].copy()

    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[self._dadr].copy()

    def joint_efforts(self) -> np.ndarray:
        return self.data.actuator_force[self._act].copy()

    def cube_positions(self) -> dict[str, np.ndarray]:
        return {c: self.data.xpos[b].copy() for c, b in self._cube_bodies.items()}

    def environment_state(self) -> np.ndarray:
        """(3 * cubes,) cube centres (m, base frame), the task's cube first, then a stack task's target, then the
        rest in CUBE_COLORS order: what LeRobot calls `observation.environment_state`, ordered by the task so that
        its first three values say where the named cube is (a training target for grounding the instruction)."""
        named = [self.task.cube] + ([self.task.target] if self.task.target else [])
        order = named + [c for c in CUBE_COLORS if c not in named]
        cubes = self.cube_positions()
        return np.concatenate([cubes[c] for c in order]).astype(np.float32)

    def cube_yaw(self, colour: str) -> float:
        xmat = self.data.xmat[self._cube_bodies[colour]].reshape(3, 3)
        return float(np.arctan2(xmat[1, 0], xmat[0, 0]))

    def gripper_touching(self, colour: str) -> bool:
        cube = self._cube_bodies[colour]
        for i in range(self.data.ncon):
            contact = self.data.contact[i]
            bodies = {self.model.geom_bodyid[contact.geom1], self.model.geom_bodyid[contact.geom2]}
            if cube in bodies and bodies & self._gripper_bodies:
                return True
        return False

    def render(self, camera: str) -> np.ndarray:
        """One HxWx3 uint8 frame from `camera`."""
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.config.height, self.config.width)
        self._renderer.update_scene(self.data, camera)
        return self._renderer.render().copy()

    def observation(self) -> dict:
        return {
            "images": {name: self.render(name) for name in self.config.cameras},
            "state": self.joint_positions(),
            "time": self.time,
        }

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> SimEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
