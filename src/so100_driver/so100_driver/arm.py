"""The arm controller: trajectories in, safe goal positions out, over any `JointBackend`. ROS-free.

It follows timed trajectories the way ros2_control's JointTrajectoryController does on its topic interface:
- a trajectory is a start time plus points with `time_from_start`; points already in the past when it arrives are
  dropped (all of them in the past: rejected);
- a new trajectory replaces the old one from its own start time (until then the old one keeps running);
- between points it interpolates linearly, or with cubic Hermite segments when every point carries velocities;
  the first segment starts from the position commanded when the trajectory takes over;
- joints a trajectory does not name hold their current command.

Every output goes through the `SafetyLayer` (limits, velocity/acceleration/step caps, e-stop). The watchdog
follows JointTrajectoryController's semantics: a trajectory published once runs to its last point (MoveIt and
users publish long trajectories once); the watchdog fires only when nothing new arrived for `timeout` after the
active trajectory's last point, and for direct position commands (`set_target`, no end time) `timeout` after the
last one. When the watchdog fires, when a joint faults (no answer, overload...) or on `stop()`, the arm holds
where it is. A joint fault is reported per joint; new commands are refused until the faulty joint answers cleanly
again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from so100_driver.backend import BackendError, JointBackend, JointReading
from so100_driver.safety import SafetyLayer, UnsafeCommandError, check_finite

log = logging.getLogger(__name__)

T = TypeVar("T")
PAST_TOLERANCE = 0.05  # s: a point this little in the past still counts (message conversion, lock waits)


class CommandRejectedError(ValueError):
    """A command the controller refuses (unknown joints, bad timing, NaN, a faulted arm...). The arm holds."""


@dataclass
class TrajectoryPoint:
    time_from_start: float  # s
    positions: np.ndarray  # (K,) rad, for the trajectory's joints
    velocities: np.ndarray | None = None  # (K,) rad/s, or None


@dataclass
class Trajectory:
    """`points` ordered by strictly increasing `time_from_start`; `start_time` on the controller's clock (s)."""

    joint_names: tuple[str, ...]
    points: list[TrajectoryPoint]
    start_time: float


@dataclass
class StepResult:
    """What one control step did."""

    reading: JointReading
    command: np.ndarray | None  # what was sent to the backend (None if the write failed)
    holding: bool
    faults: dict[str, str] = field(default_factory=dict)


@dataclass
class _Active:
    """A validated trajectory mapped onto all joints, with its first segment starting from `origin`."""

    start_time: float
    times: np.ndarray  # (P,) absolute
    positions: np.ndarray  # (P, J)
    velocities: np.ndarray | None  # (P, J)
    mask: np.ndarray  # (J,) bool: joints this trajectory moves
    origin: np.ndarray | None = None  # (J,) command when it took over
    origin_time: float | None = None


class ArmController:
    """Drives a `JointBackend` at a fixed control rate (the caller calls `step()`; see arm_node)."""

    def __init__(
        self,
        backend: JointBackend,
        safety: SafetyLayer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if tuple(backend.joint_names) != tuple(safety.limits.names):
            raise ValueError(f"backend joints {backend.joint_names} differ from safety joints {safety.limits.names}")
        self.backend = backend
        self.safety = safety
        self.clock = clock
        self.joint_names: tuple[str, ...] = tuple(backend.joint_names)
        self._index = {name: i for i, name in enumerate(self.joint_names)}
        self._active: _Active | None = None
        self._pending: _Active | None = None
        self._last_step: float | None = None
        self.faults: dict[str, str] = {}
        self.last_reading: JointReading | None = None
        self.hold_reason: str | None = "not started"

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self, torque: bool = True) -> JointReading:
        """Read where the arm is and hold there (torque on if asked). Raises BackendError if nothing answers."""
        reading = self.backend.read()
        self.last_reading = reading
        self.faults = dict(reading.faults)
        self.safety.reset(reading.positions)
        if torque:
            # Hold target first, torque second: enabling torque with a stale goal register would jump.
            self.backend.write_goal(self.safety.last_command)
            self.backend.set_torque(True)
        self.hold_reason = "started"
        self._last_step = self.clock()
        return reading

    def set_torque(self, enabled: bool) -> None:
        """Torque on re-syncs to the measured position first, so the arm never jumps to an old goal."""
        if enabled:
            reading = self.backend.read()
            self.safety.reset(reading.positions)
            self.backend.write_goal(self.safety.last_command)
        self._clear("torque changed")
        self.backend.set_torque(enabled)

    def shutdown(self, disable_torque: bool) -> None:
        """Hold, then optionally release torque; always close the backend. Safe to call more than once."""
        try:
            try:
                if self.safety._last is not None:  # started: hold where we were last sent
                    self._clear("shutdown")
                    self.backend.write_goal(self.safety.hold())
            finally:
                if disable_torque:
                    self.backend.set_torque(False)
        finally:
            self.backend.close()

    # -- commands -----------------------------------------------------------------------------------------
    def stop(self, reason: str = "stop requested") -> None:
        """Hold here now (drops any trajectory; not latching)."""
        self._clear(reason)
        self.safety.hold()

    def estop(self, reason: str = "software e-stop") -> None:
        self._clear(reason)
        self.safety.estop(reason)

    def reset_estop(self) -> None:
        self.safety.reset_estop()
        self.hold_reason = "e-stop reset"

    def set_trajectory(self, trajectory: Trajectory) -> None:
        """Validate and queue `trajectory`; it replaces the current one from its start time.

        Raises CommandRejectedError (the arm keeps doing what it did). The watchdog is fed until the
        trajectory's last point: it never cuts a trajectory short, it catches a stream that stops.
        """
        now = self.clock()
        self._check_accepting()
        mask, cols = self._columns(trajectory.joint_names)
        if not trajectory.points:
            raise CommandRejectedError("trajectory has no points")
        times, positions, velocities = [], [], []
        with_velocities = all(p.velocities is not None and len(p.velocities) > 0 for p in trajectory.points)
        previous = -math.inf
        for k, point in enumerate(trajectory.points):
            t = float(point.time_from_start)
            if not math.isfinite(t) or t < 0 or t <= previous:
                raise CommandRejectedError(
                    f"trajectory point {k}: time_from_start {t} must be finite, >= 0 and strictly increasing"
                )
            previous = t
            times.append(trajectory.start_time + t)
            positions.append(self._full(point.positions, trajectory.joint_names, cols, f"point {k} positions"))
            if with_velocities:
                velocities.append(self._full(point.velocities, trajectory.joint_names, cols, f"point {k} velocities"))
        times_arr = np.array(times)
        # A trajectory stamped "now" (zero stamp) was timed a moment ago: its time_from_start 0 point is not past.
        keep = times_arr >= now - PAST_TOLERANCE
        if not keep.any():
            raise CommandRejectedError(
                f"all {len(times)} trajectory points are in the past (last one {now - times_arr[-1]:.3f} s ago)"
            )
        entry = _Active(
            start_time=trajectory.start_time,
            times=times_arr[keep],
            positions=np.array(positions)[keep],
            velocities=np.array(velocities)[keep] if with_velocities else None,
            mask=mask,
        )
        if entry.start_time <= now:
            self._activate(entry, now)
        else:
            self._pending = entry
        self.safety.watchdog.feed(now, until=float(entry.times[-1]))
        self.hold_reason = None

    def set_target(self, joint_names: Sequence[str], positions: Sequence[float]) -> None:
        """Go to `positions` now, as fast as the safety limits allow (a direct position command)."""
        now = self.clock()
        self._check_accepting()
        mask, cols = self._columns(joint_names)
        full = self._full(positions, joint_names, cols, "positions")
        entry = _Active(start_time=now, times=np.array([now]), positions=full[None, :], velocities=None, mask=mask)
        self._pending = None
        self._activate(entry, now)
        self.safety.watchdog.feed(now)
        self.hold_reason = None

    # -- the control step ---------------------------------------------------------------------------------
    def step(self, read: bool = True) -> StepResult:
        """Read, compute the next command, filter it, write it. Backend errors are reported, never raised.

        `read=False` reuses the last reading: a step taken the moment a command arrives writes at once and
        leaves the bus read (and fault detection) to the next regular step.
        """
        now = self.clock()
        dt = now - self._last_step if self._last_step is not None else 0.0
        self._last_step = now
        if not read and self.last_reading is not None:
            reading = self.last_reading
        else:
            try:
                reading = self.backend.read()
            except BackendError as exc:
                # Nothing answered: hold (the write below will likely fail too, which we report as well).
                reading = self._stale_reading(now, str(exc))
        self.last_reading = reading
        newly_faulted = set(reading.faults) - set(self.faults)
        self.faults = dict(reading.faults)
        if newly_faulted:
            names = ", ".join(f"{j}: {reading.faults[j]}" for j in sorted(newly_faulted))
            log.error("holding: joint fault(s) %s", names)
            self._clear(f"joint fault ({names})")
        if self.safety.watchdog.expired(now) and (self._active is not None or self._pending is not None):
            self._clear(f"no command for more than {self.safety.watchdog.timeout:.3f} s (watchdog)")
        if dt <= 0:
            return StepResult(reading, None, self.holding, dict(self.faults))
        target = self._desired(now)
        try:
            command = self.safety.hold() if target is None else self.safety.filter(target, dt)
        except UnsafeCommandError as exc:  # cannot happen for validated input; hold rather than crash
            log.error("holding: %s", exc)
            self._clear(str(exc))
            command = self.safety.hold()
        try:
            self.backend.write_goal(command)
        except BackendError as exc:
            key = exc.joint or "bus"
            self.faults.setdefault(key, f"write failed: {exc}")
            return StepResult(reading, None, self.holding, dict(self.faults))
        return StepResult(reading, command, self.holding, dict(self.faults))

    @property
    def holding(self) -> bool:
        return self._active is None and self._pending is None

    # -- internals ----------------------------------------------------------------------------------------
    def _check_accepting(self) -> None:
        if self.safety.estopped:
            raise CommandRejectedError(f"e-stop latched ({self.safety.estop_reason}); call reset_estop first")
        if self.faults:
            detail = "; ".join(f"{j}: {m}" for j, m in sorted(self.faults.items()))
            raise CommandRejectedError(f"arm is holding because of joint fault(s): {detail}")
        if self.safety._last is None:
            raise CommandRejectedError("controller not started")

    def _columns(self, names: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        names = list(names)
        unknown = [n for n in names if n not in self._index]
        if unknown:
            raise CommandRejectedError(f"unknown joint name(s) {unknown}; this arm has {list(self.joint_names)}")
        if len(set(names)) != len(names):
            raise CommandRejectedError(f"duplicate joint names in {names}")
        if not names:
            raise CommandRejectedError("command names no joints")
        cols = [self._index[n] for n in names]
        mask = np.zeros(len(self.joint_names), dtype=bool)
        mask[cols] = True
        return mask, cols

    def _full(
        self, values: Sequence[float] | np.ndarray, names: Sequence[str], cols: list[int], what: str
    ) -> np.ndarray:
        """Scatter values for `names` into a (J,) array (other joints: NaN placeholders, masked later)."""
        if values is None or len(values) != len(cols):
            n = 0 if values is None else len(values)
            raise CommandRejectedError(f"{what}: {n} values for {len(cols)} joint names {list(names)}")
        try:
            checked = check_finite(values, list(names))
        except UnsafeCommandError as exc:
            raise CommandRejectedError(f"{what}: {exc}") from None
        full = np.full(len(self.joint_names), np.nan)
        full[cols] = checked
        return full

    def _activate(self, entry: _Active, now: float) -> None:
        # A queued trajectory may take over after some of its points passed: drop those (keep the last one).
        keep = entry.times >= now
        if not keep.any():
            keep[-1] = True
        entry.times, entry.positions = entry.times[keep], entry.positions[keep]
        if entry.velocities is not None:
            entry.velocities = entry.velocities[keep]
        entry.origin = self.safety.last_command
        entry.origin_time = now
        self._active = entry

    def _clear(self, reason: str) -> None:
        self._active = None
        self._pending = None
        self.safety.watchdog.disarm()
        self.hold_reason = reason

    def _desired(self, now: float) -> np.ndarray | None:
        if self._pending is not None and now >= self._pending.start_time:
            self._activate(self._pending, now)
            self._pending = None
        entry = self._active
        if entry is None:
            return None
        held = self.safety.last_command
        desired = _interpolate(entry, now)
        return np.where(entry.mask, desired, held)

    def _stale_reading(self, now: float, message: str) -> JointReading:
        last = self.last_reading
        n = len(self.joint_names)
        positions = last.positions if last is not None else self.safety.last_command
        return JointReading(
            stamp=now,
            positions=positions,
            velocities=np.zeros(n),
            efforts=np.zeros(n),
            faults={name: message for name in self.joint_names},
        )


class ControlLoop:
    """Runs `controller.step()` in its own thread every 1/rate s; `command()` puts a new command on the bus at once.

    Why: as an rclpy timer the step shared the executor with every callback, and a new command waited for the next
    tick (up to a period) plus the executor's queue: 60-70 ms at p99 on 2 cores. Now a command's callback changes
    the command and writes it in the same breath (`step(read=False)`: no thread hand-off, which costs a scheduler
    wake-up on a loaded machine), while the regular ticks keep their own absolute schedule (`step()`, with a read).

    `lock` guards the controller and so the bus: hold it for every call into the controller. `on_step(result,
    ticked)` runs after every step outside the lock (`ticked`: a regular step with a fresh read, in this thread).
    """

    def __init__(
        self,
        controller: ArmController,
        rate: float,
        on_step: Callable[[StepResult, bool], None],
        name: str = "arm-control",
    ) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"control rate must be a positive number of Hz, got {rate}")
        self.controller = controller
        self.period = 1.0 / rate
        self.on_step = on_step
        self.lock = threading.Lock()
        self._stopped = threading.Event()
        self.step_durations: list[float] = []  # s, last 1000 steps (diagnostics, benchmarks)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> ControlLoop:
        self._thread.start()
        return self

    def command(self, change: Callable[[], T]) -> T:
        """Run `change()` (a call that sets a new command) under the lock, then write the result at once.

        Exceptions from `change` (a rejected command) propagate and nothing extra is written.
        """
        with self.lock:
            value = change()
            result = self._step(read=False)
        self._after(result, ticked=False)
        return value

    def stop(self, timeout: float = 2.0) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _step(self, read: bool) -> StepResult | None:
        t0 = time.perf_counter()
        try:
            result = self.controller.step(read=read)
        except Exception:  # a bug must not end control silently: log it, hold, keep the loop alive
            log.exception("control step failed; holding")
            self.controller.stop("control step failed")
            result = None
        self.step_durations.append(time.perf_counter() - t0)
        del self.step_durations[:-1000]
        return result

    def _after(self, result: StepResult | None, ticked: bool) -> None:
        if result is None:
            return
        try:
            self.on_step(result, ticked)
        except Exception:
            log.exception("control loop on_step callback failed")

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stopped.wait(max(0.0, next_tick - time.monotonic())):
            with self.lock:
                result = self._step(read=True)
            # An absolute schedule keeps the average rate; after a stall it resumes instead of bursting.
            now = time.monotonic()
            next_tick += self.period
            if next_tick <= now:
                if now - next_tick > 5 * self.period:
                    log.warning("control loop %.0f ms late (CPU starved or a slow bus)", (now - next_tick) * 1e3)
                next_tick = now + self.period
            self._after(result, ticked=True)


def _interpolate(entry: _Active, now: float) -> np.ndarray:
    """Position at `now`: linear (or cubic Hermite with velocities) through origin -> points; last point after."""
    assert entry.origin is not None and entry.origin_time is not None
    times = np.concatenate([[entry.origin_time], entry.times])
    positions = np.vstack([entry.origin, entry.positions])
    if entry.velocities is not None:
        velocities = np.vstack([np.zeros_like(entry.origin), entry.velocities])
    if now >= times[-1]:
        return positions[-1]
    k = int(np.searchsorted(times, now, side="right")) - 1
    k = max(k, 0)
    t0, t1 = times[k], times[k + 1]
    h = t1 - t0
    s = 0.0 if h <= 0 else (now - t0) / h
    p0, p1 = positions[k], positions[k + 1]
    if entry.velocities is None:
        return p0 + s * (p1 - p0)
    v0, v1 = velocities[k], velocities[k + 1]
    h00 = 2 * s**3 - 3 * s**2 + 1
    h10 = s**3 - 2 * s**2 + s
    h01 = -2 * s**3 + 3 * s**2
    h11 = s**3 - s**2
    return h00 * p0 + h10 * h * v0 + h01 * p1 + h11 * h * v1
