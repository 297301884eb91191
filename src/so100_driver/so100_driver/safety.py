"""Joint-space safety layer shared by the real (Feetech) and the simulated (MuJoCo) arm. ROS-free.

Every position command on its way to a backend goes through `SafetyLayer.filter`, which guarantees, whatever the
input:
- the output is finite and inside the joint's position limits (once the layer was reset inside them; an arm that
  starts outside its limits is only ever moved back toward them);
- consecutive outputs differ by at most `max_step` and by at most `max_velocity * dt` per joint;
- the implied velocity changes by at most `max_acceleration * dt`, except where a position limit or a hold
  (e-stop, watchdog) forces an immediate stop: stopping is always allowed, running into a limit never is;
- NaN/inf targets raise `UnsafeCommandError` (the caller holds), they are never clamped into something plausible;
- a latched software e-stop makes every output the held position until `reset_estop()`.

The command watchdog lives here too: a controller that stops hearing commands holds position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from so100_driver.joints import JointSpec


class UnsafeCommandError(ValueError):
    """A command the safety layer refuses outright (NaN/inf, wrong length)."""


@dataclass(frozen=True)
class SafetyLimits:
    """Per-joint limits, arrays of shape (J,). Units: rad, rad/s, rad/s^2, rad.

    Args:
        names: joint names, in the order of every array.
        lower: lowest position, rad.
        upper: highest position, rad.
        max_velocity: speed cap, rad/s.
        max_acceleration: acceleration cap, rad/s^2.
        max_step: largest change between two consecutive commands, rad (a last line of defence against a
            controller running with a huge dt).
    """

    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray
    max_acceleration: np.ndarray
    max_step: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.names)
        for field in ("lower", "upper", "max_velocity", "max_acceleration", "max_step"):
            value = np.asarray(getattr(self, field), dtype=float)
            if value.shape != (n,):
                raise ValueError(f"safety limit {field} has shape {value.shape}, expected ({n},)")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"safety limit {field} must be finite, got {value.tolist()}")
            object.__setattr__(self, field, value)
        if not np.all(self.lower < self.upper):
            raise ValueError(f"lower limits {self.lower.tolist()} must be below upper {self.upper.tolist()}")
        for field in ("max_velocity", "max_acceleration", "max_step"):
            if not np.all(getattr(self, field) > 0):
                raise ValueError(f"safety limit {field} must be > 0, got {getattr(self, field).tolist()}")

    @classmethod
    def from_joints(
        cls,
        joints: Sequence[JointSpec],
        velocity_scale: float = 1.0,
        max_acceleration: float = 20.0,
        max_step: float = 0.2,
    ) -> SafetyLimits:
        """Limits from the joint table: its position limits, its velocity caps scaled by `velocity_scale` (0..1]."""
        if not 0 < velocity_scale <= 1:
            raise ValueError(f"velocity_scale must be in (0, 1], got {velocity_scale}")
        n = len(joints)
        return cls(
            names=tuple(j.name for j in joints),
            lower=np.array([j.lower for j in joints]),
            upper=np.array([j.upper for j in joints]),
            max_velocity=np.array([j.max_velocity * velocity_scale for j in joints]),
            max_acceleration=np.full(n, float(max_acceleration)),
            max_step=np.full(n, float(max_step)),
        )

    def clamp(self, positions: np.ndarray) -> np.ndarray:
        return np.clip(positions, self.lower, self.upper)


class CommandWatchdog:
    """Expires when no command arrived for `timeout` seconds. Time is whatever clock the caller passes."""

    def __init__(self, timeout: float) -> None:
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"watchdog timeout must be a positive number of seconds, got {timeout}")
        self.timeout = timeout
        self._deadline: float | None = None

    def feed(self, now: float, until: float | None = None) -> None:
        """A command arrived at `now`; `until` extends the deadline (a trajectory whose last point is then)."""
        self._deadline = max(now, until if until is not None else now) + self.timeout

    def disarm(self) -> None:
        """Nothing to watch (the arm is holding on purpose)."""
        self._deadline = None

    def expired(self, now: float) -> bool:
        return self._deadline is not None and now > self._deadline


def check_finite(positions: Sequence[float] | np.ndarray, names: Sequence[str]) -> np.ndarray:
    """`positions` as a float array of len(names); UnsafeCommandError naming the joint on NaN/inf/bad length."""
    try:
        array = np.asarray(positions, dtype=float)
    except (TypeError, ValueError) as exc:
        raise UnsafeCommandError(f"command is not numeric: {exc}") from None
    if array.shape != (len(names),):
        raise UnsafeCommandError(f"command has {array.size} values for {len(names)} joints {list(names)}")
    bad = [f"{name}={value}" for name, value in zip(names, array, strict=True) if not math.isfinite(value)]
    if bad:
        raise UnsafeCommandError(f"command rejected, non-finite joint target(s): {', '.join(bad)}")
    return array


class SafetyLayer:
    """Turns any position target into a safe next command (see the module docstring for the guarantees)."""

    def __init__(self, limits: SafetyLimits, watchdog_timeout: float = 0.5) -> None:
        self.limits = limits
        self.watchdog = CommandWatchdog(watchdog_timeout)
        self._last: np.ndarray | None = None
        self._velocity = np.zeros(len(limits.names))
        self._estop_reason: str | None = None

    # -- state ------------------------------------------------------------------------------------------
    @property
    def last_command(self) -> np.ndarray:
        if self._last is None:
            raise RuntimeError("safety layer used before reset(measured_positions)")
        return self._last.copy()

    @property
    def estopped(self) -> bool:
        return self._estop_reason is not None

    @property
    def estop_reason(self) -> str | None:
        return self._estop_reason

    def reset(self, measured: np.ndarray) -> None:
        """Start from where the arm is (a measured position), at rest."""
        self._last = check_finite(measured, self.limits.names).copy()
        self._velocity = np.zeros(len(self.limits.names))

    def estop(self, reason: str = "software e-stop") -> None:
        """Latch: every output is the held position until reset_estop()."""
        self._estop_reason = reason
        self._velocity[:] = 0.0
        self.watchdog.disarm()

    def reset_estop(self) -> None:
        self._estop_reason = None

    # -- filtering --------------------------------------------------------------------------------------
    def hold(self) -> np.ndarray:
        """The held position (an immediate stop: zero velocity from now on)."""
        self._velocity[:] = 0.0
        return self.last_command

    def filter(self, target: np.ndarray, dt: float) -> np.ndarray:
        """The next command toward `target`, `dt` seconds after the previous one. Raises UnsafeCommandError."""
        last = self.last_command
        target = check_finite(target, self.limits.names)
        if not (math.isfinite(dt) and dt > 0):
            raise UnsafeCommandError(f"control period must be > 0 s, got {dt}")
        if self.estopped:
            return self.hold()
        lim = self.limits
        goal = lim.clamp(target)
        distance = goal - last
        # Fastest speed from which the joint still stops at the goal decelerating by a*dt per step (the discrete
        # form of sqrt(2*a*d)): approaching a goal overshoots it by far less than a servo tick at most.
        a_dt = lim.max_acceleration * dt
        steps = (np.sqrt(1.0 + 8.0 * np.abs(distance) / (a_dt * dt)) - 1.0) / 2.0
        stoppable = steps * a_dt
        wanted = np.sign(distance) * np.minimum(np.abs(distance) / dt, stoppable)
        dv = lim.max_acceleration * dt
        velocity = np.clip(wanted, self._velocity - dv, self._velocity + dv)
        velocity = np.clip(velocity, -lim.max_velocity, lim.max_velocity)
        step = np.clip(velocity * dt, -lim.max_step, lim.max_step)
        # An arm reset outside its limits may only move back toward them, never further out.
        low = np.minimum(lim.lower, last)
        high = np.maximum(lim.upper, last)
        out = np.clip(last + step, low, high)
        self._velocity = (out - last) / dt
        self._last = out
        return out.copy()
