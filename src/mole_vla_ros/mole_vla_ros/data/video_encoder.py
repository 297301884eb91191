"""Per-camera video encoding for LeRobotDatasetWriter's live mode: in this process, or in a worker process.

The live recorder receives images on rclpy callbacks in the same process that encodes them. Encoding (PyAV) and
the image statistics (numpy) are CPU-heavy and partly hold the GIL, so on a loaded machine they starved the
subscriptions: two 640x480 cameras at 30 fps reached 12-17 fps. `EncoderProcess` moves both into a worker process
(spawned: forking a process that runs DDS threads is unsafe) that takes frames through a pipe, fire and forget; the
caller waits only when an episode's video is finished (`finish`), to commit it. `InlineEncoder` is the same
interface in this process (offline writers, tests).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from fractions import Fraction
from multiprocessing.connection import Connection
from pathlib import Path

import av
import numpy as np

# Image statistics are taken on a grid of about this many pixels along the longer side (LeRobot downsamples images
# to ~150 px for its stats too): the per-channel min/max/mean/std barely change, the cost drops ~16x at 640x480.
STATS_SIDE = 160


class EncoderError(RuntimeError):
    """The encoder failed (message: what and where)."""


Video = tuple[av.container.OutputContainer, av.video.stream.VideoStream]


def open_video(path: Path, size: tuple[int, int], fps: int, vcodec: str) -> Video:
    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), mode="w")
    stream = container.add_stream(vcodec, rate=fps)
    stream.height, stream.width = size
    stream.pix_fmt = "yuv420p"
    stream.time_base = Fraction(1, fps)
    if vcodec == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # errors only: SVT-AV1 prints its config per stream
        stream.options = {"preset": "11", "crf": "30", "g": "2"}
    elif vcodec == "libx264":
        stream.options = {"crf": "18", "g": "2"}
    return container, stream


def encode(
    container: av.container.OutputContainer, stream: av.video.stream.VideoStream, image: np.ndarray, pts: int
) -> None:
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    frame.pts = pts
    for packet in stream.encode(frame):
        container.mux(packet)


def finish_video(container: av.container.OutputContainer, stream: av.video.stream.VideoStream) -> None:
    for packet in stream.encode():
        container.mux(packet)
    container.close()


class ImageSums:
    """Running per-channel sums of images in [0, 1]: mean, mean of squares, min, max (LeRobot's image stats)."""

    def __init__(self) -> None:
        self.count = 0
        self.sum = np.zeros(3)
        self.sum_sq = np.zeros(3)
        self.min = np.ones(3)
        self.max = np.zeros(3)

    def add(self, image: np.ndarray) -> None:
        step = max(1, max(image.shape[:2]) // STATS_SIDE)
        pixels = image[::step, ::step].reshape(-1, 3).astype(np.float32) / 255.0
        self.count += 1
        self.sum += pixels.mean(0)
        self.sum_sq += (pixels * pixels).mean(0)
        self.min = np.minimum(self.min, pixels.min(0))
        self.max = np.maximum(self.max, pixels.max(0))

    @classmethod
    def from_stats(cls, stats: dict) -> ImageSums:
        """The sums behind stats() (a resumed dataset's meta/stats.json entry of one camera)."""
        sums = cls()
        sums.count = int(stats["count"][0])
        channel = {k: np.array([float(np.ravel(v)[0]) for v in stats[k]]) for k in ("min", "max", "mean", "std")}
        sums.sum = channel["mean"] * sums.count
        sums.sum_sq = (channel["std"] ** 2 + channel["mean"] ** 2) * sums.count
        sums.min, sums.max = channel["min"], channel["max"]
        return sums

    def merge(self, other: ImageSums) -> None:
        self.count += other.count
        self.sum += other.sum
        self.sum_sq += other.sum_sq
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)

    def stats(self) -> dict[str, list]:
        mean = self.sum / max(self.count, 1)
        std = np.sqrt(np.maximum(self.sum_sq / max(self.count, 1) - mean**2, 0.0))
        return {
            k: [[[float(v)]] for v in arr]
            for k, arr in (("min", self.min), ("max", self.max), ("mean", mean), ("std", std))
        } | {"count": [self.count]}


class InlineEncoder:
    """One video per camera name, encoded in this process: open, frame..., finish (-> the image sums) or discard."""

    def __init__(self, fps: int, vcodec: str) -> None:
        self.fps, self.vcodec = fps, vcodec
        self._videos: dict[str, tuple] = {}

    def is_open(self, name: str) -> bool:
        return name in self._videos

    def open(self, name: str, path: Path, size: tuple[int, int]) -> None:
        container, stream = open_video(path, size, self.fps, self.vcodec)
        self._videos[name] = (container, stream, ImageSums(), path)

    def frame(self, name: str, image: np.ndarray, pts: int) -> None:
        container, stream, sums, _path = self._videos[name]
        encode(container, stream, image, pts)
        sums.add(image)

    def finish(self, name: str) -> ImageSums:
        container, stream, sums, _path = self._videos.pop(name)
        finish_video(container, stream)
        return sums

    def discard(self, name: str) -> None:
        if name in self._videos:
            container, _stream, _sums, path = self._videos.pop(name)
            container.close()
            Path(path).unlink(missing_ok=True)

    def close(self) -> None:
        for name in list(self._videos):
            self.discard(name)


class EncoderProcess:
    """InlineEncoder's interface, run in a spawned worker process; frames go through a pipe without a reply.

    A failure inside the worker (a full disk, a bad frame) is reported by the next `finish`/`discard` as an
    EncoderError. Not thread-safe: one caller thread (the recorder's writer thread).
    """

    def __init__(self, fps: int, vcodec: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, fps, vcodec), name="video-encoder", daemon=True)
        self._process.start()
        child.close()
        self._open: set[str] = set()
        self._lock = threading.Lock()

    def is_open(self, name: str) -> bool:
        return name in self._open

    def open(self, name: str, path: Path, size: tuple[int, int]) -> None:
        self._send(("open", name, str(path), tuple(size)))
        self._open.add(name)

    def frame(self, name: str, image: np.ndarray, pts: int) -> None:
        image = np.ascontiguousarray(image)
        with self._lock:
            self._check_alive()
            self._conn.send(("frame", name, pts, image.shape))
            self._conn.send_bytes(image.reshape(-1).data)  # the raw pixels, flat (send_bytes takes len()), no pickle

    def finish(self, name: str) -> ImageSums:
        self._open.discard(name)
        return self._call(("finish", name))

    def discard(self, name: str) -> None:
        self._open.discard(name)
        self._call(("discard", name))

    def close(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(EncoderError):  # it is going away either way
                self._call(("stop",))
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
        self._conn.close()
        self._open.clear()

    def _check_alive(self) -> None:
        if not self._process.is_alive():
            raise EncoderError(f"the video encoder process exited (code {self._process.exitcode})")

    def _send(self, message: tuple) -> None:
        with self._lock:
            self._check_alive()
            self._conn.send(message)

    def _call(self, message: tuple):
        self._send(message)
        try:
            ok, value = self._conn.recv()
        except EOFError as exc:
            raise EncoderError(f"the video encoder process exited (code {self._process.exitcode})") from exc
        if not ok:
            raise EncoderError(value)
        return value


def _serve(conn: Connection, fps: int, vcodec: str) -> None:
    """The worker: runs an InlineEncoder on the messages; the first error is kept and answered to the next call."""
    # Ctrl-C in a terminal signals the whole process group: the recorder saves its episode at SIGINT/SIGTERM
    # and needs this process for that; it ends when the recorder closes the pipe (or dies).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    encoder = InlineEncoder(fps, vcodec)
    error: str | None = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the recorder died: leave the partial files, as a killed in-process one would
            return
        kind, name = message[0], message[1] if len(message) > 1 else None
        if kind == "frame":
            pixels = conn.recv_bytes()
            if error is None:
                try:
                    encoder.frame(name, np.frombuffer(pixels, np.uint8).reshape(message[3]), message[2])
                except Exception as exc:
                    error = f"camera {name}, frame {message[2]}: {type(exc).__name__}: {exc}"
            continue
        if kind == "open":
            if error is None:
                try:
                    encoder.open(name, Path(message[2]), message[3])
                except Exception as exc:
                    error = f"camera {name}: cannot open {message[2]}: {type(exc).__name__}: {exc}"
            continue
        reply: tuple = (True, None)
        try:
            if error is not None:
                encoder.discard(name) if name else encoder.close()
                reply, error = (False, error), None
            elif kind == "finish":
                reply = (True, encoder.finish(name))
            elif kind == "discard":
                encoder.discard(name)
            elif kind == "stop":
                encoder.close()
        except Exception as exc:
            reply = (False, f"camera {name}: {kind}: {type(exc).__name__}: {exc}")
        conn.send(reply)
        if kind == "stop":
            return
