"""Aligns timestamped streams (camera images, joint states, commanded action) into frames at a fixed fps.

The one alignment used by the live recorder (`nodes/recorder_node.py`) and the bag converter (`bag2lerobot.py`),
so the two cannot disagree. No ROS import: messages are read by duck typing (rclpy's or rosbags' classes).

Rules:
- Frame times are t0 + k / fps, where t0 is the stamp of the first sample of the *reference* stream (the first
  camera) at or after the episode start. The reference stream is the clock: a frame is only decided once a
  reference sample at or after its time has arrived, so a stalled camera produces no frames until it comes back
  (the gap is then decided, and counted).
- Each frame takes, per stream, the latest sample with stamp <= t + tolerance (stamp jitter accepted). A sample
  older than `max_age` at the frame time is stale. A frame without a fresh sample of every stream is dropped and
  counted (per stream: `missing` = nothing yet, `stale` = too old); nothing is interpolated or invented.
- Live, a frame waits until `now - latency` passes its time, so samples of other streams still in flight arrive
  first; a sample that arrives after its frame was decided is counted as `late` (a bag has none).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# sensor_msgs/image_encodings.h names we accept, with their channel count.


@dataclass(frozen=True)
class Frame:
    """One aligned frame: its time (s) and, per stream, the chosen sample's value and stamp."""

    time: float
    values: dict[str, Any]
    stamps: dict[str, float]


@dataclass
class AlignStats:
    """Counts of one episode. `dropped` frames lacked a fresh sample of at least one stream."""

    streams: Sequence[str]
    frames: int = 0
    dropped: int = 0
    received: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    stale: dict[str, int] = field(default_factory=dict)
    late: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for counts in (self.received, self.missing, self.stale, self.late):
            for name in self.streams:
                counts.setdefault(name, 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "dropped": self.dropped,
            "received": dict(self.received),
            "missing": dict(self.missing),
            "stale": dict(self.stale),
            "late": dict(self.late),
        }


class FrameAligner:
    """Buffers samples per stream and turns them into frames (see the module docstring for the rules).

    Args:
        streams: stream names; every frame needs all of them.
        reference: the stream whose samples drive frame times (a camera).
        fps: frame rate, Hz.
        max_age: oldest sample a frame may take, s (relative to the frame time).
        tolerance: how far after the frame time a sample's stamp may be and still count for it, s.
        history: how long samples are kept while no episode runs, s (beyond max_age).

    Not thread-safe: the caller serialises add/begin/poll/end.
    """

    def __init__(
        self,
        streams: Sequence[str],
        reference: str,
        fps: float,
        max_age: float,
        tolerance: float = 0.0,
        history: float = 1.0,
    ) -> None:
        if len(set(streams)) != len(streams) or not streams:
            raise ValueError(f"streams must be distinct and not empty, got {list(streams)}")
        if reference not in streams:
            raise ValueError(f"reference stream {reference!r} is not one of {list(streams)}")
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be positive, got {fps}")
        if not (max_age > 0 and 0 <= tolerance < 1.0 / fps and history >= 0):
            raise ValueError(
                f"need max_age > 0 and 0 <= tolerance < 1/fps, got max_age={max_age} tolerance={tolerance}"
            )
        self.streams = tuple(streams)
        self.reference = reference
        self.fps = float(fps)
        self.max_age = float(max_age)
        self.tolerance = float(tolerance)
        self.history = float(history)
        # Stamps and t0 + k / fps come from different float arithmetic: a microsecond absorbs the rounding.
        self._slack = self.tolerance + 1e-6
        self._stamps: dict[str, list[float]] = {s: [] for s in self.streams}
        self._values: dict[str, list[Any]] = {s: [] for s in self.streams}
        self._start: float | None = None  # episode start (s) while an episode runs
        self._t0: float | None = None
        self._next = 0  # index k of the next undecided frame
        self.stats = AlignStats(self.streams)

    # ---- input -------------------------------------------------------------------------------------------

    def add(self, stream: str, stamp: float, value: Any) -> None:
        if stream not in self._stamps:
            raise ValueError(f"unknown stream {stream!r}; expected one of {list(self.streams)}")
        if not math.isfinite(stamp):
            raise ValueError(f"stream {stream}: stamp {stamp} is not finite")
        stamps = self._stamps[stream]
        i = bisect.bisect_right(stamps, stamp)
        stamps.insert(i, stamp)
        self._values[stream].insert(i, value)
        if self.running:
            self.stats.received[stream] += 1
            if self._next > 0 and stamp <= self._time(self._next - 1) + self._slack:
                self.stats.late[stream] += 1
        else:
            self._prune_idle(stream)

    def latest(self, stream: str) -> tuple[float, Any] | None:
        """The newest sample of a stream (stamp, value), or None."""
        stamps = self._stamps[stream]
        return (stamps[-1], self._values[stream][-1]) if stamps else None

    # ---- episodes ----------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._start is not None

    @property
    def t0(self) -> float | None:
        """Time of the episode's frame 0 (s), once the reference stream has given it."""
        return self._t0

    def begin(self, start: float) -> None:
        """Start an episode: its first frame is the first reference sample stamped at or after `start`."""
        if self.running:
            raise RuntimeError("an episode is already running")
        self._start = float(start)
        self._t0 = None
        self._next = 0
        self.stats = AlignStats(self.streams)

    def poll(self, until: float = math.inf) -> list[Frame]:
        """Decide every frame whose time (plus tolerance) is <= `until` and that the reference stream has passed."""
        return self._decide_until(until) if self.running else []

    def end(self, stop: float = math.inf) -> list[Frame]:
        """End the episode: decide the frames up to the last reference sample at or before `stop`."""
        if not self.running:
            return []
        frames = self._decide_until(math.inf, stop)
        self._start = None
        for stream in self.streams:
            self._prune_idle(stream)
        return frames

    # ---- internals ---------------------------------------------------------------------------------------

    def _decide_until(self, until: float, stop: float = math.inf) -> list[Frame]:
        ref = self._stamps[self.reference]
        if self._t0 is None:
            i = bisect.bisect_left(ref, self._start)
            if i == len(ref) or ref[i] > stop:
                return []
            self._t0 = ref[i]
        # The newest reference sample the frames may reach (at or before stop).
        last = bisect.bisect_right(ref, stop + self._slack) - 1
        limit = min(ref[last], stop) if last >= 0 else -math.inf
        frames = []
        while True:
            t = self._time(self._next)
            if t + self.tolerance > until or t > limit + self._slack:
                break
            frame = self._decide(t)
            self._next += 1
            if frame is not None:
                frames.append(frame)
        self._prune_running()
        return frames

    def _time(self, k: int) -> float:
        assert self._t0 is not None
        return self._t0 + k / self.fps

    def _decide(self, t: float) -> Frame | None:
        values, stamps, ok = {}, {}, True
        for stream in self.streams:
            i = bisect.bisect_right(self._stamps[stream], t + self._slack) - 1
            if i < 0:
                self.stats.missing[stream] += 1
                ok = False
                continue
            stamp = self._stamps[stream][i]
            if t - stamp > self.max_age + 1e-6:
                self.stats.stale[stream] += 1
                ok = False
                continue
            values[stream], stamps[stream] = self._values[stream][i], stamp
        if not ok:
            self.stats.dropped += 1
            return None
        self.stats.frames += 1
        return Frame(time=t, values=values, stamps=stamps)

    def _prune_running(self) -> None:
        if self._t0 is None:
            return
        horizon = self._time(self._next) + self._slack
        for stream in self.streams:
            keep_from = bisect.bisect_right(self._stamps[stream], horizon) - 1  # the candidate for the next frame
            if keep_from > 0:
                del self._stamps[stream][:keep_from]
                del self._values[stream][:keep_from]

    def _prune_idle(self, stream: str) -> None:
        stamps = self._stamps[stream]
        if not stamps:
            return
        keep_from = bisect.bisect_left(stamps, stamps[-1] - self.max_age - self.history)
        if keep_from > 0:
            del stamps[:keep_from]
            del self._values[stream][:keep_from]
