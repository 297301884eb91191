"""CameraNode over real DDS: publishes a video file as images + camera info, survives a missing device."""

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CameraInfo, Image

from mole_vla_ros import conversions, qos
from so100_driver.testing.ros_harness import NodeProcess, wait_until

pytestmark = pytest.mark.dds

MODULE = "mole_vla_ros.nodes.camera_node"


@pytest.fixture
def video(tmp_path):
    """A 20-frame 40x30 AVI: pure blue (BGR 255, 0, 0), so a swapped channel order shows."""
    path = tmp_path / "blue.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (40, 30))
    assert writer.isOpened()
    frame = np.zeros((30, 40, 3), np.uint8)
    frame[:, :, 0] = 255
    for _ in range(20):
        writer.write(frame)
    writer.release()
    return path


def _spin_until(executor, predicate, timeout, message):
    return wait_until(predicate, timeout, lambda t: executor.spin_once(timeout_sec=t), message)


def test_camera_publishes_a_video_file_resized_in_rgb(video):
    args = ["--ros-args", "-p", f"device:={video}", "-p", "width:=64", "-p", "height:=48", "-p", "fps:=30.0"]
    with NodeProcess(MODULE, args) as proc, rclpy.init():
        node = rclpy.create_node("camera_probe")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        images, infos = [], []
        node.create_subscription(Image, "image_raw", images.append, qos.SENSOR_DATA)
        node.create_subscription(CameraInfo, "camera_info", infos.append, qos.SENSOR_DATA)
        # 25 frames > the file's 20: the node reopens the file at its end like a camera coming back.
        _spin_until(executor, lambda: len(images) >= 25 and infos, 20.0, f"frames\n{proc.tail()}")
        msg = images[-1]
        assert (msg.width, msg.height, msg.encoding) == (64, 48, "rgb8")
        assert msg.header.frame_id == "camera_optical_frame"
        pixels = conversions.image_to_numpy(msg)
        red, green, blue = pixels.reshape(-1, 3).mean(axis=0)
        assert blue > 200 and red < 50 and green < 50
        info = infos[-1]
        assert (info.width, info.height) == (64, 48)
        assert info.k[2] == pytest.approx(31.5) and info.k[0] > 0
        assert "dropped" in proc.tail(200) and "resizing to 64x48" in proc.tail(200)
        node.destroy_node()
    assert proc.proc.returncode in (0, -2), proc.tail()


def test_missing_device_is_retried_with_backoff_and_the_node_stays_alive(tmp_path):
    missing = tmp_path / "no_such_camera.avi"
    args = ["--ros-args", "-p", f"device:={missing}", "-p", "reconnect_min:=0.05", "-p", "reconnect_max:=0.2"]
    with NodeProcess(MODULE, args) as proc:
        wait_until(lambda: "attempt 4" in proc.tail(200), 20.0, message=f"reconnect attempts\n{proc.tail()}")
        log = proc.tail(200)
        assert "retrying in 0.05 s" in log and "retrying in 0.10 s" in log and "retrying in 0.20 s" in log
        assert proc.alive()
        # A camera that appears later is picked up.
        writer = cv2.VideoWriter(str(missing), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
        for _ in range(5):
            writer.write(np.zeros((48, 64, 3), np.uint8))
        writer.release()
        wait_until(lambda: "opened" in proc.tail(400), 10.0, message=f"reconnect\n{proc.tail()}")
    assert proc.proc.returncode in (0, -2), proc.tail()
