"""`MujocoBackend`: a `JointBackend` over a live `SimEnv` that steps in real time in its own thread.

`ArmNode(backend=MujocoBackend(...))` then gives the simulated arm exactly the real arm's ROS interface. The same
thread renders the camera (a GL context belongs to the thread that made it), at the camera rate, so rendering cost
shows up honestly as a lower real-time factor when the CPU cannot keep up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from so100_driver.backend import BackendError, JointReading
from so100_driver.sim.env import SimConfig, SimEnv
from so100_driver.sim.tasks import Task


@dataclass(frozen=True)
class Frame:
    """The cameras' images rendered at one sim instant: `stamp_ns` on the caller's clock, `sim_time` in s."""

    images: dict[str, np.ndarray]  # camera name -> (H, W, 3) uint8
    stamp_ns: int
    sim_time: float
    index: int


class MujocoBackend:
    """The sim arm, stepping at `config.control_hz` x `real_time_factor` in a background thread.

    Args:
        config: the SimEnv settings (arm, physics rate, the cameras to render and their size).
        seed: seed of the first episode.
        real_time_factor: sim seconds per wall second (1.0 = real time).
        camera_fps: camera frames per sim second (0 = no camera).
        clock_ns: the clock that stamps readings and frames (the ROS node's clock, so images and joint states
            share one time base); default wall time.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        seed: int = 0,
        real_time_factor: float = 1.0,
        camera_fps: float = 30.0,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if not 0.01 <= real_time_factor <= 100.0:
            raise ValueError(f"real_time_factor {real_time_factor} outside 0.01..100")
        if camera_fps < 0:
            raise ValueError(f"camera_fps must be >= 0, got {camera_fps}")
        self.env = SimEnv(config or SimConfig())
        self.joint_names = self.env.joint_names
        self.real_time_factor = real_time_factor
        self.camera_fps = camera_fps
        self.clock_ns = clock_ns
        self.seed = seed
        self.env.reset(seed, observe=False)
        self._kp = self.env.model.actuator_gainprm[self.env._act, 0].copy()
        self._bias = self.env.model.actuator_biasprm[self.env._act, :3].copy()
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._frame_ready = threading.Condition(self._lock)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self.steps = 0
        self._thread = threading.Thread(target=self._run, name="mujoco-sim", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------ JointBackend

    def read(self) -> JointReading:
        self._check_alive()
        with self._lock:
            return JointReading(
                stamp=self.clock_ns() * 1e-9,
                positions=self.env.joint_positions(),
                velocities=self.env.joint_velocities(),
                efforts=self.env.joint_efforts(),
            )

    def write_goal(self, positions: np.ndarray) -> None:
        self._check_alive()
        try:
            with self._lock:
                self.env.set_goal(positions)
        except ValueError as exc:
            raise BackendError(f"sim rejected goal: {exc}") from exc

    def set_torque(self, enabled: bool) -> None:
        """Off: the position actuators produce no force (the arm sags under gravity, as the real one does)."""
        self._check_alive()
        with self._lock:
            model, act = self.env.model, self.env._act
            model.actuator_gainprm[act, 0] = self._kp if enabled else 0.0
            model.actuator_biasprm[act, :3] = self._bias if enabled else 0.0
            if enabled:
                # The setpoint starts where the arm is, so torque on never jumps to an old goal.
                self.env.data.ctrl[act] = self.env.joint_positions()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)
        with self._lock:
            self.env.close()

    # ------------------------------------------------------------------------------------ sim control

    def reset(self, seed: int | None = None, task: Task | str | None = None) -> str:
        """A new seeded episode (arm home, cubes re-placed); returns its instruction."""
        with self._lock:
            self.seed = self.seed + 1 if seed is None else seed
            self.env.reset(self.seed, task, observe=False)
            return self.env.instruction

    def set_task(self, task: Task | str) -> str:
        """Change the task (instruction text is parsed; ValueError when it names none); returns its text."""
        with self._lock:
            self.env.set_task(task)
            return self.env.instruction

    def success(self) -> bool:
        with self._lock:
            return self.env.success()

    @property
    def instruction(self) -> str:
        return self.env.instruction

    def wait_frame(self, after: int = -1, timeout: float = 1.0) -> Frame | None:
        """The latest frame newer than index `after`, waiting up to `timeout` s; None if none came."""
        with self._frame_ready:
            self._frame_ready.wait_for(lambda: self._frame is not None and self._frame.index > after, timeout)
            frame = self._frame
        return frame if frame is not None and frame.index > after else None

    # ------------------------------------------------------------------------------------ the sim thread

    def _check_alive(self) -> None:
        if self._error is not None:
            raise BackendError(f"sim thread died: {self._error!r}")
        if self._stop.is_set():
            raise BackendError("sim closed")

    def _run(self) -> None:
        env = self.env
        cameras = env.config.cameras if self.camera_fps > 0 else ()
        period = env.dt / self.real_time_factor
        next_frame_time = 0.0
        frames = 0
        deadline = time.monotonic()
        try:
            while not self._stop.is_set():
                with self._lock:
                    env.advance(env.substeps)
                    self.steps += 1
                    render = bool(cameras) and env.time >= next_frame_time - 1e-9
                    if render:
                        images = {name: env.render(name) for name in cameras}
                        self._frame = Frame(images, self.clock_ns(), env.time, frames)
                        frames += 1
                        next_frame_time = env.time + 1.0 / self.camera_fps
                        self._frame_ready.notify_all()
                deadline += period
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                elif delay < -0.25:
                    # Far behind (a slow CPU, a debugger): run slower than real time rather than burst to catch up.
                    deadline = time.monotonic()
        except BaseException as exc:  # the node must learn the sim is gone, not hang on a silent thread
            self._error = exc
            raise
        finally:
            with self._lock:
                env.close()  # the renderer's GL context goes with the thread that made it
