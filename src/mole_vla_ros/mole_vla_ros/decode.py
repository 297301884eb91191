"""Message fields to numbers, without ROS: rclpy's and rosbags' message classes alike (duck typing).

The live nodes (through `conversions`), the recorder and the bag converter (`data/align.py`, `data/bag2lerobot.py`)
all decode with these functions, so a bag and a live stream of the same messages give the same numbers, and the
same malformed message is refused with the same reason everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# 8-bit encodings we accept, with their channel count (sensor_msgs/image_encodings.h names).
CHANNELS: dict[str, int] = {"mono8": 1, "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}


def stamp_seconds(header: Any) -> float | None:
    """A std_msgs/Header's stamp in seconds, or None when it was never set (zero)."""
    sec, nanosec = int(header.stamp.sec), int(header.stamp.nanosec)
    return None if sec == 0 and nanosec == 0 else sec + nanosec * 1e-9


def check_image(msg: Any) -> tuple[int, int, int, int]:
    """(height, width, channels, step) of a sensor_msgs/Image whose fields add up; ValueError naming what does not."""
    encoding = str(msg.encoding).lower()
    if encoding not in CHANNELS:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}; expected one of {sorted(CHANNELS)}")
    channels = CHANNELS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ValueError(f"image has no pixels: {width}x{height}")
    if step < width * channels:
        raise ValueError(f"image step {step} is smaller than width*channels = {width}*{channels} ({encoding})")
    if len(msg.data) < step * height:
        raise ValueError(f"image data has {len(msg.data)} bytes, expected step*height = {step}*{height}")
    return height, width, channels, step


def image_to_numpy(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, C) uint8 copy in the message's own channel order, row padding removed."""
    height, width, channels, step = check_image(msg)
    rows = np.frombuffer(memoryview(msg.data).cast("B")[: step * height], dtype=np.uint8).reshape(height, step)
    return rows[:, : width * channels].reshape(height, width, channels).copy()


def to_rgb(array: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, C) array in `encoding` -> (H, W, 3) RGB, the policy's and the datasets' colour order."""
    import cv2

    conversions = {
        "rgb8": None,
        "bgr8": cv2.COLOR_BGR2RGB,
        "mono8": cv2.COLOR_GRAY2RGB,
        "rgba8": cv2.COLOR_RGBA2RGB,
        "bgra8": cv2.COLOR_BGRA2RGB,
    }
    encoding = encoding.lower()
    if encoding not in conversions:
        raise ValueError(f"unsupported image encoding {encoding!r}; expected one of {sorted(conversions)}")
    code = conversions[encoding]
    return np.ascontiguousarray(array) if code is None else cv2.cvtColor(array, code).reshape(*array.shape[:2], 3)


def image_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB."""
    return to_rgb(image_to_numpy(msg), str(msg.encoding))


def joint_positions(msg: Any, joint_names: Sequence[str]) -> np.ndarray:
    """sensor_msgs/JointState -> (J,) float64 in `joint_names` order (extra joints ignored).

    ValueError when lengths differ, a joint is missing, or a position is not finite.
    """
    names = [str(n) for n in msg.name]
    positions = np.asarray(msg.position, dtype=np.float64)
    if len(names) != len(positions):
        raise ValueError(f"JointState has {len(names)} names but {len(positions)} positions")
    index = dict(zip(names, positions, strict=True))
    missing = [n for n in joint_names if n not in index]
    if missing:
        raise ValueError(f"JointState lacks joints {missing} (has {names})")
    out = np.array([index[n] for n in joint_names], dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"JointState has non-finite positions {out.tolist()}")
    return out
