"""What the policy node needs without ROS: instruction checks and the latest, fresh-enough observation."""

from __future__ import annotations

import threading
import unicodedata
from dataclasses import dataclass

import numpy as np

MAX_INSTRUCTION_BYTES = 4096


def validate_instruction(text: str) -> str:
    """Return the instruction stripped of surrounding whitespace, or raise ValueError saying what is wrong.

    Refused: empty or blank text, more than 4096 bytes of UTF-8, text that is not valid Unicode, text carrying
    U+FFFD (rclpy decodes a message's invalid UTF-8 bytes into that replacement character, so a garbled
    instruction would otherwise reach the model as if it were meant) and control characters other than tab and
    newline.
    """
    if not isinstance(text, str):
        raise ValueError(f"instruction must be a string, got {type(text).__name__}")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("instruction is not valid UTF-8 text") from None
    if size > MAX_INSTRUCTION_BYTES:
        raise ValueError(f"instruction is {size} bytes; the limit is {MAX_INSTRUCTION_BYTES}")
    if "\ufffd" in text:
        raise ValueError("instruction is not valid UTF-8 text (undecodable bytes, shown as U+FFFD)")
    stripped = text.strip()
    if not stripped:
        raise ValueError("instruction is empty")
    bad = [c for c in stripped if unicodedata.category(c) == "Cc" and c not in "\t\n"]
    if bad:
        raise ValueError(f"instruction contains control characters {[hex(ord(c)) for c in bad[:3]]}")
    return stripped


class StaleObservationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Observation:
    images: tuple[np.ndarray, ...]  # (H, W, 3) uint8 RGB per camera, in image_topics order
    state: np.ndarray  # (J,) rad
    stamp: float  # oldest input's stamp, s: the chunk's actions are timed from it


class ObservationBuffer:
    """Latest image per camera and latest joint state, each with its stamp. Thread-safe."""

    def __init__(self, cameras: tuple[str, ...]) -> None:
        if not cameras:
            raise ValueError("at least one camera topic is needed")
        self.cameras = tuple(cameras)
        self._lock = threading.Lock()
        self._images: dict[str, tuple[np.ndarray, float]] = {}
        self._state: tuple[np.ndarray, float] | None = None

    def update_image(self, camera: str, rgb: np.ndarray, stamp: float) -> None:
        if camera not in self.cameras:
            raise KeyError(f"unknown camera {camera!r}; expected one of {list(self.cameras)}")
        with self._lock:
            self._images[camera] = (rgb, stamp)

    def update_state(self, positions: np.ndarray, stamp: float) -> None:
        with self._lock:
            self._state = (positions, stamp)

    def snapshot(self, now: float, max_age: float) -> Observation:
        """The latest inputs, or StaleObservationError naming each one missing or older than `max_age` s."""
        with self._lock:
            images = dict(self._images)
            state = self._state
        problems = []
        for camera in self.cameras:
            if camera not in images:
                problems.append(f"no image yet on {camera}")
            elif now - images[camera][1] > max_age:
                problems.append(f"camera image {camera} stale for {now - images[camera][1]:.2f} s")
        if state is None:
            problems.append("no joint state yet")
        elif now - state[1] > max_age:
            problems.append(f"joint state stale for {now - state[1]:.2f} s")
        if problems:
            raise StaleObservationError("; ".join(problems))
        stamps = [images[c][1] for c in self.cameras] + [state[1]]
        return Observation(
            images=tuple(images[c][0] for c in self.cameras), state=state[0].copy(), stamp=float(min(stamps))
        )
