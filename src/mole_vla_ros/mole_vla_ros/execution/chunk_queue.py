"""SmolVLA-style asynchronous chunk execution, without ROS: a queue of timed joint targets.

Each action of a chunk has an absolute target time: start + offset (offset i = (i+1)/fps), where start is the
observation stamp moved on by the time the queue held still since then (stale actions counted in EXECUTED steps,
`stale_clock="executed"`, like lerobot's async client: while the arm holds, no action of the new plan is overtaken;
`"wall"` counts wall-clock time from the stamp, which skips the arm ahead in its plan after every dry spell). The
control loop calls `pop(now)` every tick and gets the target it should be heading to. When a new chunk arrives:
- actions whose time has already passed, or that are due before the target already sent to the arm, are
  dropped: the inference latency is absorbed and the arm never moves backwards in time (lerobot async_inference
  drops steps at or before the last executed one);
- where old and new chunks overlap in time, the two are blended (replace / average / weighted with a new-chunk
  weight, 0.7 by default like lerobot's `weighted_average`);
- old actions later than the new chunk's last one are discarded: the newer plan wins.
`needs_chunk(now)` turns true when what remains is at most `threshold` x the chunk length (lerobot's
`chunk_size_threshold`, 0.5 in its code), or, with `threshold_mode="latency"`, when the queued time falls under the
time the next chunk is expected to take (measured chunk age on arrival plus a margin). A dry queue holds the last
command and says so.

`sync` mode is the baseline SmolVLA compares against: ask, wait, execute the whole chunk from its arrival, ask
again. There is deliberately no joint-space "similar observation" filter (lerobot issues #1557, #1500: it makes
async degenerate into waiting for an empty queue).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from so100_driver.joints import JointSpec, joints_for


class BlendMode(StrEnum):
    REPLACE = "replace"
    AVERAGE = "average"
    WEIGHTED = "weighted"


class ExecutionMode(StrEnum):
    ASYNC = "async"
    SYNC = "sync"


class StaleClock(StrEnum):
    EXECUTED = "executed"  # overtaken = time since the observation minus the time the queue held still
    WALL = "wall"  # overtaken = time since the observation


class ThresholdMode(StrEnum):
    FIXED = "fixed"  # request below threshold x chunk
    LATENCY = "latency"  # request when the queued time < expected latency + margin, at most threshold x chunk


# Weight of a new latency sample when it is lower than the estimate; a higher one replaces the estimate at once
# (requesting a little early costs one more blend, requesting late costs a dry spell).
LATENCY_DECAY_WEIGHT = 0.3


@dataclass(frozen=True)
class QueueConfig:
    """Args:
    mode: async (request ahead, blend overlaps) or sync (request only when empty, run the chunk from arrival).
    threshold: request the next chunk when remaining actions <= threshold x chunk length, in (0, 1] (lerobot's
        `chunk_size_threshold` test: queue size / chunk size <= threshold).
    blend_mode: how overlapping old and new actions merge.
    blend_weight: weight of the NEW chunk in weighted mode, in [0, 1] (lerobot: 0.7).
    request_timeout: seconds after which an unanswered chunk request may be repeated.
    arm: joint table used to validate limits ("so100" or "so101").
    limit_tolerance: rad. Actions at most this far outside a joint's limits are clamped onto the limit (a
        policy trained on demonstrations that touch a limit overshoots it slightly); farther than this the whole
        chunk is rejected, since the model is then not producing anything the arm can do.
    stale_clock: how a new chunk's overtaken actions are counted. "executed": the time since its observation
        minus the time the queue held still meanwhile, so a chunk computed while the arm waited starts where the
        arm is, not ahead of it (a chunk observed while the arm held still plays from its arrival). "wall": all
        the time since its observation; after a dry spell the arm skips ahead in the plan, and an inference longer
        than the chunk's horizon never moves the arm (bench_async_sync).
    threshold_mode: "fixed" requests below `threshold` x chunk (lerobot's chunk_size_threshold). "latency"
        requests when the queued time falls below the expected chunk latency (the age of recent chunks on arrival)
        plus `latency_margin`, clamped to [threshold_min, threshold] x the chunk's horizon: just in time, with as
        few inferences as a queue that never runs dry allows. That is possible only while the chunk lasts at least
        twice the latency plus the margin (one request is in flight); beyond, it asks as the fixed threshold does.
        Until a chunk arrived it behaves as fixed.
    threshold_min: latency mode: never request later than this fraction of the chunk, in [0, 1].
    latency_margin: s added to the latency estimate (a few control ticks: the policy's wake-up, jitter).
    """

    mode: ExecutionMode = ExecutionMode.ASYNC
    threshold: float = 0.5
    blend_mode: BlendMode = BlendMode.WEIGHTED
    blend_weight: float = 0.7
    request_timeout: float = 1.0
    arm: str = "so100"
    limit_tolerance: float = 0.1
    stale_clock: StaleClock = StaleClock.EXECUTED
    threshold_mode: ThresholdMode = ThresholdMode.FIXED
    threshold_min: float = 0.1
    latency_margin: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", ExecutionMode(self.mode))
        object.__setattr__(self, "blend_mode", BlendMode(self.blend_mode))
        object.__setattr__(self, "stale_clock", StaleClock(self.stale_clock))
        object.__setattr__(self, "threshold_mode", ThresholdMode(self.threshold_mode))
        if not 0.0 <= self.threshold_min <= 1.0:
            raise ValueError(f"threshold_min must be in [0, 1], got {self.threshold_min}")
        if not (math.isfinite(self.latency_margin) and self.latency_margin >= 0):
            raise ValueError(f"latency_margin must be >= 0, got {self.latency_margin}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 <= self.blend_weight <= 1.0:
            raise ValueError(f"blend_weight must be in [0, 1], got {self.blend_weight}")
        if not (math.isfinite(self.request_timeout) and self.request_timeout > 0):
            raise ValueError(f"request_timeout must be positive, got {self.request_timeout}")
        if not (math.isfinite(self.limit_tolerance) and self.limit_tolerance >= 0):
            raise ValueError(f"limit_tolerance must be >= 0, got {self.limit_tolerance}")
        joints_for(self.arm)  # raises on an unknown arm

    @property
    def new_weight(self) -> float:
        return {BlendMode.REPLACE: 1.0, BlendMode.AVERAGE: 0.5, BlendMode.WEIGHTED: self.blend_weight}[self.blend_mode]


@dataclass(frozen=True)
class PushResult:
    accepted: bool
    reason: str = ""
    dropped_stale: int = 0  # actions of the new chunk whose time had passed
    blended: int = 0  # actions merged with the old queue
    queued: int = 0  # queue length after the push
    start: float | None = None  # the chunk's action i is due at start + offsets[i] (None when rejected)


@dataclass(frozen=True)
class Tick:
    """What the control loop should command now. `positions` is None only before any command is known."""

    positions: np.ndarray | None
    holding: bool  # True when the queue is dry and the last command is repeated
    target_time: float | None  # absolute time the target is meant to be reached (None when holding)
    hold_duration: float = 0.0  # seconds the queue has been dry


class ChunkRejectedError(ValueError):
    pass


def validate_chunk(
    positions: np.ndarray, offsets: np.ndarray, joints: Sequence[JointSpec], limit_tolerance: float = 0.0
) -> np.ndarray:
    """The chunk's positions clamped onto the joint limits, or ChunkRejectedError naming the first problem:
    shape, non-finite values, an action more than `limit_tolerance` rad outside its limits, or time order."""
    if positions.ndim != 2 or positions.shape[1] != len(joints) or positions.shape[0] == 0:
        raise ChunkRejectedError(f"chunk must be (H>0, {len(joints)}) positions, got {positions.shape}")
    if offsets.shape != (positions.shape[0],):
        raise ChunkRejectedError(f"chunk has {positions.shape[0]} actions but {offsets.shape} time offsets")
    if not np.all(np.isfinite(positions)):
        step, joint = np.argwhere(~np.isfinite(positions))[0]
        raise ChunkRejectedError(f"non-finite action at step {step} joint {joints[joint].name}")
    if not np.all(np.isfinite(offsets)) or np.any(np.diff(offsets) <= 0) or offsets[0] < 0:
        raise ChunkRejectedError(f"action times must be finite, non-negative and increasing, got {offsets.tolist()}")
    lower = np.array([j.lower for j in joints])
    upper = np.array([j.upper for j in joints])
    outside = (positions < lower - limit_tolerance) | (positions > upper + limit_tolerance)
    if np.any(outside):
        step, joint = np.argwhere(outside)[0]
        spec = joints[joint]
        raise ChunkRejectedError(
            f"action at step {step} puts {spec.name} at {positions[step, joint]:.3f} rad, "
            f"outside its limits [{spec.lower:.3f}, {spec.upper:.3f}]"
        )
    return np.clip(positions, lower, upper)


# rad. A policy trained on demonstrations that rest on a joint limit (jaws shut at their stop, the IK'd elbow at its
# end) samples actions past it: flow-matching noise does not respect the data's support. Measured on the default
# checkpoint's 50%-budget chunks: up to 0.68 rad past the elbow and 0.65 past the gripper, in 27% of the chunks, which
# the executor's 0.1 rad tolerance would reject while the arm holds. The policy side clamps such overshoots (the
# evaluation always has); only actions farther out than this are treated as a broken model and left to be rejected.
POLICY_CLAMP_MARGIN = 1.0


def clamp_near_limits(positions: np.ndarray, joints: Sequence[JointSpec], margin: float) -> tuple[np.ndarray, float]:
    """(positions with every action at most `margin` rad outside its joint's limits clamped onto the limit, the
    largest overshoot seen). Actions farther out are left as they are, for `validate_chunk` to reject by name."""
    lower = np.array([j.lower for j in joints])
    upper = np.array([j.upper for j in joints])
    overshoot = np.maximum(positions - upper, lower - positions)
    near = (overshoot > 0) & (overshoot <= margin)
    clamped = np.where(near, np.clip(positions, lower, upper), positions)
    return clamped, float(overshoot.max(initial=0.0))


class ChunkQueue:
    """The timed action queue. Not thread-safe: the owner serialises calls (the executor node holds a lock)."""

    def __init__(self, config: QueueConfig | None = None) -> None:
        self.config = config or QueueConfig()
        self._joints = joints_for(self.config.arm)
        self._times = np.zeros(0)  # (N,) absolute seconds, increasing
        self._actions = np.zeros((0, len(self._joints)))  # (N, J)
        self._last_command: np.ndarray | None = None
        self._dry_since: float | None = None
        self._holds: deque[tuple[float, float]] = deque(maxlen=256)  # closed dry spells (start, end)
        self._chunk_length = 0
        self._chunk_horizon = 0.0  # s from observation to the last chunk's last action
        self._latency: float | None = None  # estimate of a chunk's age on arrival, s
        self._requested_at: float | None = None
        self._sent_until = -math.inf  # target time of the last action handed to the arm

    # ---- state ----

    def __len__(self) -> int:
        return len(self._times)

    @property
    def last_command(self) -> np.ndarray | None:
        return None if self._last_command is None else self._last_command.copy()

    def remaining(self, now: float) -> int:
        return int(np.count_nonzero(self._times >= now))

    @property
    def latency(self) -> float | None:
        """Expected age of a chunk on arrival (s), None before the first chunk."""
        return self._latency

    def held_between(self, start: float, end: float) -> float:
        """Seconds the queue spent dry (the arm holding) within [start, end]."""
        spells = list(self._holds) + ([(self._dry_since, end)] if self._dry_since is not None else [])
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b in spells)

    def _latency_lead(self) -> float | None:
        """Latency mode: the queued time (s) under which the next chunk is asked for, so that it arrives before
        the queue runs dry: latency + margin, clamped to [threshold_min, threshold] x the chunk's horizon. None in
        fixed mode or before the first chunk.

        Never earlier than the fixed threshold: with one request in flight, a chunk asked for with more than half
        of the previous one left cannot arrive before the queue runs dry anyway once the latency exceeds half the
        horizon, and the part of it the arm executes meanwhile from the old chunk is overtaken (bench_async_sync:
        asking at once cost 0.4 s at 1.8 s latency with 50-action chunks)."""
        if self.config.threshold_mode is ThresholdMode.FIXED or self._latency is None:
            return None
        horizon = self._chunk_horizon
        lead = max(self._latency + self.config.latency_margin, self.config.threshold_min * horizon)
        return min(lead, self.config.threshold * horizon)

    def threshold_fraction(self) -> float:
        """The fraction of a chunk under which the next one is requested (async; for diagnostics)."""
        lead = self._latency_lead()
        return self.config.threshold if lead is None or self._chunk_horizon <= 0 else lead / self._chunk_horizon

    def seed_hold(self, positions: np.ndarray) -> None:
        """The position to hold before any chunk arrived (e.g. the arm's measured joints)."""
        self._last_command = np.asarray(positions, dtype=np.float64).copy()

    def clear(self) -> None:
        """Drop every queued action; the arm holds its last command."""
        self._times = self._times[:0]
        self._actions = self._actions[:0]

    # ---- requests ----

    def needs_chunk(self, now: float) -> bool:
        """True when a new chunk should be requested now (and no recent request is still unanswered)."""
        if self._requested_at is not None and now - self._requested_at < self.config.request_timeout:
            return False
        remaining = self.remaining(now)
        if self.config.mode is ExecutionMode.SYNC or self._chunk_length == 0:
            return remaining == 0
        lead = self._latency_lead()
        if lead is None:
            return remaining <= self.config.threshold * self._chunk_length
        # Compared in time, not in actions: what is queued must outlast the expected latency plus the margin.
        return (float(self._times[-1]) - now if remaining else 0.0) < lead

    def mark_requested(self, now: float) -> None:
        self._requested_at = now

    # ---- chunks in, actions out ----

    def push(self, stamp: float, offsets: np.ndarray, positions: np.ndarray, now: float) -> PushResult:
        """Add a chunk computed from the observation at `stamp`. A bad chunk clears the queue (the arm holds)."""
        positions = np.asarray(positions, dtype=np.float64)
        offsets = np.asarray(offsets, dtype=np.float64)
        try:
            positions = validate_chunk(positions, offsets, self._joints, self.config.limit_tolerance)
            if not math.isfinite(stamp):
                raise ChunkRejectedError(f"chunk stamp must be finite, got {stamp}")
        except ChunkRejectedError as err:
            self.clear()
            self._requested_at = None
            return PushResult(accepted=False, reason=str(err), queued=0)
        self._requested_at = None
        self._chunk_length = len(offsets)
        self._chunk_horizon = float(offsets[-1])
        age = max(0.0, now - stamp)
        self._latency = (
            age
            if self._latency is None or age > self._latency
            else (1.0 - LATENCY_DECAY_WEIGHT) * self._latency + LATENCY_DECAY_WEIGHT * age
        )
        if self.config.mode is ExecutionMode.SYNC:
            # Sync executes the whole chunk from its arrival: nothing is dropped, nothing blended.
            self._times = now + offsets
            self._actions = positions.copy()
            return PushResult(accepted=True, queued=len(self._times), start=now)

        start = stamp
        if self.config.stale_clock is StaleClock.EXECUTED:
            # While the arm held still it executed none of the plan: only the time it moved overtook actions.
            # (An arm dry since the observation thus plays the chunk from its arrival.)
            start = min(now, stamp + self.held_between(stamp, now))
        times = start + offsets
        # Past actions, and those due before the target already sent, would move the arm back in time.
        fresh = (times >= now) & (times > self._sent_until)
        dropped = int(np.count_nonzero(~fresh))
        times, positions = times[fresh], positions[fresh]
        blended = 0
        old_live = self._times >= now
        old_times, old_actions = self._times[old_live], self._actions[old_live]
        if len(times) and len(old_times):
            # Old plan sampled at the new actions' times, only where it actually covers them.
            overlap = (times >= old_times[0]) & (times <= old_times[-1])
            blended = int(np.count_nonzero(overlap))
            if blended:
                old_at_new = np.stack(
                    [np.interp(times[overlap], old_times, old_actions[:, j]) for j in range(old_actions.shape[1])],
                    axis=1,
                )
                w = self.config.new_weight
                positions = positions.copy()
                positions[overlap] = w * positions[overlap] + (1.0 - w) * old_at_new
            # Old actions before the new chunk's first one stay: they are the arm's immediate future.
            keep = old_times < times[0]
            self._times = np.concatenate([old_times[keep], times])
            self._actions = np.concatenate([old_actions[keep], positions])
        elif len(times):
            self._times, self._actions = times, positions.copy()
        else:
            self._times, self._actions = old_times, old_actions
        return PushResult(accepted=True, dropped_stale=dropped, blended=blended, queued=len(self._times), start=start)

    def pop(self, now: float) -> Tick:
        """The target for the control tick at `now`: the earliest action not yet due-and-passed.

        Actions whose time is before `now` are consumed. With nothing left, the last command is held.
        """
        passed = self._times < now
        if np.any(passed):
            self._last_command = self._actions[passed][-1].copy()
            self._times, self._actions = self._times[~passed], self._actions[~passed]
        if len(self._times):
            if self._dry_since is not None:
                self._holds.append((self._dry_since, now))
                self._dry_since = None
            self._last_command = self._actions[0].copy()
            self._sent_until = max(self._sent_until, float(self._times[0]))
            return Tick(positions=self._last_command.copy(), holding=False, target_time=float(self._times[0]))
        if self._dry_since is None:
            self._dry_since = now
        held = None if self._last_command is None else self._last_command.copy()
        return Tick(positions=held, holding=True, target_time=None, hold_duration=now - self._dry_since)

    def upcoming(self, now: float, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The next `count` (times, actions) at or after `now`, for a timed trajectory output."""
        live = self._times >= now
        return self._times[live][:count].copy(), self._actions[live][:count].copy()


def rate_limited(
    previous: np.ndarray | None, times: np.ndarray, targets: np.ndarray, now: float, max_velocity: np.ndarray
) -> np.ndarray:
    """`targets` (N, J) meant for `times` (N,), each moved no faster than `max_velocity` (J,) rad/s from the one
    before it (the first from `previous`, sent at `now`).

    The queue already never goes backwards in time; this bounds the speed of what is sent when a new plan starts
    far from the last command (after a hold, a stalled link, a restarted policy), so the arm moves to it smoothly
    instead of jumping.
    """
    if previous is None:
        return targets
    out = np.array(targets, dtype=np.float64, copy=True)
    last, last_time = np.asarray(previous, dtype=np.float64), now
    for i in range(len(out)):
        allowed = max_velocity * max(float(times[i]) - last_time, 0.0)
        out[i] = last + np.clip(out[i] - last, -allowed, allowed)
        last, last_time = out[i], float(times[i])
    return out
