"""The only place ROS messages meet numpy (and torch): images, joint states, action chunks, stamps.

Every conversion validates its input and raises ValueError naming what is wrong, so a malformed message is
refused at the edge of a node instead of reaching the policy or the arm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from mole_msgs.msg import ActionChunk
from mole_vla_ros import decode
from so100_driver.joints import JOINT_NAMES

if TYPE_CHECKING:
    import torch

try:  # cv_bridge ships with a full ROS install, not with the PyPI wheels this workspace uses.
    from cv_bridge import CvBridge

    _BRIDGE: CvBridge | None = CvBridge()
except ImportError:
    _BRIDGE = None

CHANNELS = decode.CHANNELS
to_rgb = decode.to_rgb


# ---- time ----------------------------------------------------------------------------------------------


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_stamp(seconds: float) -> Time:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a ROS time must be finite and non-negative, got {seconds}")
    nanos = round(seconds * 1e9)
    return Time(sec=nanos // 1_000_000_000, nanosec=nanos % 1_000_000_000)


def seconds_to_duration(seconds: float) -> Duration:
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be finite, got {seconds}")
    nanos = round(seconds * 1e9)
    return Duration(sec=nanos // 1_000_000_000, nanosec=nanos % 1_000_000_000)


def duration_to_seconds(duration: Duration) -> float:
    return duration.sec + duration.nanosec * 1e-9


# ---- images --------------------------------------------------------------------------------------------


def image_to_numpy(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, C) uint8 array in the message's own channel order (a copy).

    mono8 gives C = 1. Row padding (step > width * C) is removed. Raises ValueError on an unsupported
    encoding, a step too small for the width, or data shorter than step * height (decode.check_image).
    """
    if _BRIDGE is None:
        return decode.image_to_numpy(msg)
    height, width, channels, _step = decode.check_image(msg)
    array = _BRIDGE.imgmsg_to_cv2(msg, desired_encoding="passthrough")
    return np.array(array, dtype=np.uint8).reshape(height, width, channels)


def numpy_to_image(array: np.ndarray, encoding: str, stamp: Time | None = None, frame_id: str = "") -> Image:
    """(H, W, C) or (H, W) uint8 array -> sensor_msgs/Image with a tight step."""
    encoding = encoding.lower()
    if encoding not in CHANNELS:
        raise ValueError(f"unsupported image encoding {encoding!r}; expected one of {sorted(CHANNELS)}")
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"image array must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] != CHANNELS[encoding] or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"array of shape {array.shape} does not fit encoding {encoding} ({CHANNELS[encoding]} ch)")
    height, width, channels = array.shape
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0, step=width * channels)
    msg.header = Header(stamp=stamp or Time(), frame_id=frame_id)
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


def rgb_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 in [0, 1], the policy facade's image layout."""
    import torch  # late: the camera and executor nodes never pay for importing torch

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got shape {rgb.shape} dtype {rgb.dtype}")
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


# ---- joint states --------------------------------------------------------------------------------------


def joint_state_to_positions(msg: JointState, joint_names: Sequence[str] = JOINT_NAMES) -> np.ndarray:
    """JointState -> (J,) float64 positions ordered like `joint_names` (the joint table by default).

    Raises ValueError for names outside the table, missing joints, mismatched lengths or non-finite values.
    """
    unknown = sorted({str(n) for n in msg.name} - set(joint_names))
    if unknown:
        raise ValueError(f"JointState names unknown joints {unknown}; expected {list(joint_names)}")
    return decode.joint_positions(msg, joint_names)


def positions_to_joint_state(
    positions: np.ndarray, joint_names: Sequence[str] = JOINT_NAMES, stamp: Time | None = None
) -> JointState:
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (len(joint_names),):
        raise ValueError(f"expected {len(joint_names)} positions, got shape {positions.shape}")
    msg = JointState(name=list(joint_names), position=positions.tolist())
    msg.header.stamp = stamp or Time()
    return msg


# ---- action chunks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedChunk:
    """An ActionChunk in numbers: positions (H, J) in table order, each meant for stamp + offsets[i] (s)."""

    stamp: float
    offsets: np.ndarray  # (H,)
    positions: np.ndarray  # (H, J)
    chunk_id: int
    instruction: str


def build_action_chunk(
    positions: np.ndarray,
    stamp: Time,
    fps: float,
    chunk_id: int = 0,
    instruction: str = "",
    inference_latency: float = 0.0,
    active_layers: Sequence[int] = (),
    num_layers: int = 0,
    joint_names: Sequence[str] = JOINT_NAMES,
) -> ActionChunk:
    """(H, J) radians computed from the observation at `stamp` -> ActionChunk; point i at (i+1)/fps."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[0] == 0 or positions.shape[1] != len(joint_names):
        raise ValueError(f"chunk positions must be (H>0, {len(joint_names)}), got {positions.shape}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"chunk fps must be positive and finite, got {fps}")
    msg = ActionChunk(chunk_id=int(chunk_id), instruction=instruction, inference_latency=float(inference_latency))
    msg.header.stamp = stamp
    msg.trajectory.header.stamp = stamp
    msg.trajectory.joint_names = list(joint_names)
    msg.trajectory.points = [
        JointTrajectoryPoint(positions=row.tolist(), time_from_start=seconds_to_duration((i + 1) / fps))
        for i, row in enumerate(positions)
    ]
    msg.active_layers = [int(i) for i in active_layers]
    msg.num_layers = int(num_layers)
    return msg


def parse_action_chunk(msg: ActionChunk, joint_names: Sequence[str] = JOINT_NAMES) -> ParsedChunk:
    """ActionChunk -> ParsedChunk with columns reordered to `joint_names`. Raises ValueError when malformed."""
    names = list(msg.trajectory.joint_names)
    unknown = sorted(set(names) - set(joint_names))
    missing = [n for n in joint_names if n not in names]
    if unknown or missing or len(names) != len(set(names)):
        raise ValueError(f"chunk joint names {names} do not match the table {list(joint_names)}")
    points = msg.trajectory.points
    if not points:
        raise ValueError("chunk has no points")
    order = [names.index(n) for n in joint_names]
    rows = []
    for i, point in enumerate(points):
        if len(point.positions) != len(names):
            raise ValueError(f"chunk point {i} has {len(point.positions)} positions for {len(names)} joints")
        rows.append([point.positions[j] for j in order])
    offsets = np.array([duration_to_seconds(p.time_from_start) for p in points], dtype=np.float64)
    return ParsedChunk(
        stamp=stamp_to_seconds(msg.header.stamp),
        offsets=offsets,
        positions=np.array(rows, dtype=np.float64),
        chunk_id=int(msg.chunk_id),
        instruction=msg.instruction,
    )


def build_joint_trajectory(
    positions: np.ndarray, offsets: Sequence[float], stamp: Time, joint_names: Sequence[str]
) -> JointTrajectory:
    """(N, J) positions, each reached `offsets[i]` seconds after `stamp` -> JointTrajectory (the JTC topic's type)."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != len(joint_names) or len(offsets) != positions.shape[0]:
        raise ValueError(f"positions {positions.shape} do not fit {len(joint_names)} joints / {len(offsets)} times")
    msg = JointTrajectory(joint_names=list(joint_names))
    msg.header.stamp = stamp
    msg.points = [
        JointTrajectoryPoint(positions=row.tolist(), time_from_start=seconds_to_duration(t))
        for row, t in zip(positions, offsets, strict=True)
    ]
    return msg
