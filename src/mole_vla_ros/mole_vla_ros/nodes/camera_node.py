"""CameraNode: OpenCV capture -> image_raw + camera_info (sensor-data QoS), reconnecting when the device drops.

`device` is a camera index ("0") or a path (/dev/video2, a video file: a file plays to its end, then is
reopened like a camera that came back). Several cameras = several nodes in their own namespaces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from mole_vla_ros import conversions, qos
from so100_driver import params as _params
from so100_driver.node_runner import run

ENCODINGS = ("rgb8", "bgr8", "mono8")


@dataclass(frozen=True)
class CameraParams:
    device: str
    width: int
    height: int
    fps: float
    encoding: str
    frame_id: str
    horizontal_fov: float
    reconnect_min: float
    reconnect_max: float


def open_capture(device: str, width: int, height: int, fps: float) -> cv2.VideoCapture:
    """A VideoCapture for an index ("0") or a path; the size and rate are requests the device may ignore."""
    capture = cv2.VideoCapture(int(device) if device.isdigit() else device)
    if capture.isOpened():
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        capture.set(cv2.CAP_PROP_FPS, fps)
    return capture


def camera_info(width: int, height: int, horizontal_fov: float, frame_id: str) -> CameraInfo:
    """A pinhole model from the field of view: enough for rviz until a calibration file is given."""
    fx = (width / 2.0) / math.tan(horizontal_fov / 2.0)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.header.frame_id = frame_id
    info.d = [0.0] * 5
    info.k = [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


class CameraNode(Node):
    def __init__(self, **kwargs: object) -> None:
        super().__init__("camera", **kwargs)
        self.declare_parameters(
            "",
            [
                ("device", "0", _params.text("Camera index or path (device node or video file).", read_only=True)),
                ("width", 640, _params.integer("Image width, px.", 16, 7680, read_only=True)),
                ("height", 480, _params.integer("Image height, px.", 16, 4320, read_only=True)),
                ("fps", 30.0, _params.floating("Capture rate, Hz.", 1.0, 240.0, read_only=True)),
                ("encoding", "rgb8", _params.choice("Published encoding.", ENCODINGS, read_only=True)),
                ("frame_id", "camera_optical_frame", _params.text("Optical frame of the images.", read_only=True)),
                ("horizontal_fov", 1.2, _params.floating("Horizontal field of view, rad.", 0.1, 3.1, read_only=True)),
                ("reconnect_min", 0.5, _params.floating("First reconnect delay, s.", 0.01, 60.0, read_only=True)),
                ("reconnect_max", 5.0, _params.floating("Longest reconnect delay, s.", 0.01, 600.0, read_only=True)),
            ],
        )
        self.params = self._read_params()
        self.frames = 0
        self.reconnects = 0
        self._capture: cv2.VideoCapture | None = None
        self._backoff = self.params.reconnect_min
        self._retry_at = 0.0
        self._warned_size = False
        self._info = camera_info(
            self.params.width, self.params.height, self.params.horizontal_fov, self.params.frame_id
        )
        self._image_pub = self.create_publisher(Image, "image_raw", qos.SENSOR_DATA)
        self._info_pub = self.create_publisher(CameraInfo, "camera_info", qos.SENSOR_DATA)
        self.create_timer(1.0 / self.params.fps, self._on_timer)

    def _read_params(self) -> CameraParams:
        values = {name: self.get_parameter(name).value for name in CameraParams.__dataclass_fields__}
        if values["encoding"] not in ENCODINGS:
            raise ValueError(f"encoding {values['encoding']!r} must be one of {list(ENCODINGS)}")
        if values["reconnect_max"] < values["reconnect_min"]:
            raise ValueError("reconnect_max must be >= reconnect_min")
        return CameraParams(**values)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_timer(self) -> None:
        if self._capture is None and not self._connect():
            return
        ok, frame = self._capture.read()
        if not ok or frame is None or frame.ndim not in (2, 3):
            self._drop("no frame")
            return
        self._backoff = self.params.reconnect_min
        self._publish(frame)

    def _connect(self) -> bool:
        now = self._now()
        if now < self._retry_at:
            return False
        capture = open_capture(self.params.device, self.params.width, self.params.height, self.params.fps)
        if capture.isOpened():
            self._capture = capture
            self.get_logger().info(f"camera {self.params.device} opened")
            return True
        capture.release()
        self.reconnects += 1
        self.get_logger().warning(
            f"camera {self.params.device} unavailable (attempt {self.reconnects}); retrying in {self._backoff:.2f} s"
        )
        self._retry_at = now + self._backoff
        self._backoff = min(2.0 * self._backoff, self.params.reconnect_max)
        return False

    def _drop(self, why: str) -> None:
        self.get_logger().warning(f"camera {self.params.device} dropped ({why}); reconnecting")
        if self._capture is not None:
            self._capture.release()
        self._capture = None
        self._retry_at = self._now() + self._backoff
        self._backoff = min(2.0 * self._backoff, self.params.reconnect_max)

    def _publish(self, frame: np.ndarray) -> None:
        height, width = frame.shape[:2]
        if (width, height) != (self.params.width, self.params.height):
            # Devices may ignore the requested size (or change it mid-stream); downstream expects the parameter's.
            if not self._warned_size:
                self._warned_size = True
                self.get_logger().warning(
                    f"camera gives {width}x{height}, resizing to {self.params.width}x{self.params.height}"
                )
            frame = cv2.resize(frame, (self.params.width, self.params.height), interpolation=cv2.INTER_AREA)
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        converted = {
            "bgr8": frame,
            "rgb8": cv2.cvtColor(frame, cv2.COLOR_BGR2RGB),
            "mono8": cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY),
        }[self.params.encoding]
        stamp = self.get_clock().now().to_msg()
        msg = conversions.numpy_to_image(converted, self.params.encoding, stamp, self.params.frame_id)
        self._info.header.stamp = stamp
        self._image_pub.publish(msg)
        self._info_pub.publish(self._info)
        self.frames += 1

    def destroy_node(self) -> None:
        if self._capture is not None:
            self._capture.release()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run(CameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
