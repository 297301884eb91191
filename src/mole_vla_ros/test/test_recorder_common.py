"""Shared by the recorder and bag tests (no tests here): synthetic camera / joint streams and what a frame should hold.

Images sit on the 15 fps frame grid; joint states (50 Hz) and actions (30 Hz) sit off it by a few ms, so each
frame's expected sample is unambiguous: the latest one stamped at or before the frame time.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from mole_vla_ros import qos
from mole_vla_ros.conversions import seconds_to_stamp
from so100_driver.joints import JOINT_NAMES
from so100_driver.testing.ros_harness import wait_until

FPS = 15
SIZE = (48, 64)
TOPICS = {"scene": "/camera/scene/image_raw", "state": "/joint_states", "action": "/leader/joint_states"}
TYPES = {
    "scene": "sensor_msgs/msg/Image",
    "state": "sensor_msgs/msg/JointState",
    "action": "sensor_msgs/msg/JointState",
}


@dataclass(frozen=True)
class Sample:
    stream: str
    stamp: float
    msg: object
    value: np.ndarray


def image(i: int) -> np.ndarray:
    # Flat blocks survive lossy video coding; the colours change per frame so a shifted frame shows.
    out = np.zeros((*SIZE, 3), np.uint8)
    out[:, : SIZE[1] // 2] = (17 * (i % 15), 90, 200)
    out[:, SIZE[1] // 2 :] = (210, 30 + 11 * (i % 15), 60)
    return out


def joints(t: float, phase: float) -> np.ndarray:
    return 0.3 * np.sin(2.0 * t + phase + np.arange(len(JOINT_NAMES)))


def streams(t_start: float, seconds: float) -> list[Sample]:
    """Camera at FPS from t_start, joint states at 50 Hz (+3 ms), actions at 30 Hz (+7 ms), sorted by stamp."""
    out = []
    for i in range(int(seconds * FPS)):
        t = t_start + i / FPS
        msg = Image(height=SIZE[0], width=SIZE[1], encoding="rgb8", is_bigendian=0, step=SIZE[1] * 3)
        msg.header.stamp = seconds_to_stamp(t)
        value = image(i)
        msg.data = value.tobytes()
        out.append(Sample("scene", t, msg, value))
    for stream, hz, offset, phase in (("state", 50, 0.003, 0.0), ("action", 30, 0.007, 0.5)):
        for i in range(int(seconds * hz) + 1):
            t = t_start - 0.02 + offset + i / hz
            value = joints(t, phase)
            msg = JointState(name=list(JOINT_NAMES), position=value.tolist())
            msg.header.stamp = seconds_to_stamp(t)
            out.append(Sample(stream, t, msg, value))
    return sorted(out, key=lambda s: s.stamp)


def expected_frames(samples: list[Sample], fps: int = FPS, tolerance: float = 0.005) -> dict[str, np.ndarray]:
    """Per frame: the image index, state and action (float32) of the latest sample stamped at or before its time
    plus the tolerance (the recorder's default 5 ms: the +3 ms joint states count, the +7 ms actions do not)."""
    by = {s: [x for x in samples if x.stream == s] for s in TOPICS}
    cams = np.array([x.stamp for x in by["scene"]])
    times = cams[0] + np.arange(len(cams)) / fps
    out: dict[str, list] = {"image": [], "state": [], "action": []}
    for t in times:
        for stream, key in (("scene", "image"), ("state", "state"), ("action", "action")):
            stamps = np.array([x.stamp for x in by[stream]])
            i = int(np.searchsorted(stamps, t + tolerance + 1e-6, side="right")) - 1
            out[key].append(i if stream == "scene" else by[stream][i].value.astype(np.float32))
    return {k: np.array(v) for k, v in out.items()}


def bag_records(samples: list[Sample], log_delay: float = 0.002) -> list[tuple[str, str, int, bytes]]:
    """rosbag2 records of the samples, logged `log_delay` s after their stamps (as a recorder would receive them)."""
    return [
        (TOPICS[s.stream], TYPES[s.stream], round((s.stamp + log_delay) * 1e9), serialize_message(s.msg))
        for s in samples
    ]


class RecorderProbe:
    """The test's side of a recorder over DDS: publishers of the three streams, the services, the status."""

    def __init__(self, name: str, services: tuple[str, ...] = ("start", "stop", "discard")) -> None:
        self.node = rclpy.create_node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.pubs = {
            "scene": self.node.create_publisher(Image, TOPICS["scene"], qos.SENSOR_DATA),
            "state": self.node.create_publisher(JointState, TOPICS["state"], qos.RELIABLE),
            "action": self.node.create_publisher(JointState, TOPICS["action"], qos.RELIABLE),
        }
        self.status: list[dict] = []
        self.node.create_subscription(String, "recorder/status", lambda m: self.status.append(json.loads(m.data)), 10)
        self.clients = {n: self.node.create_client(Trigger, f"recorder/{n}") for n in services}

    def spin_until(self, predicate, timeout, message):
        return wait_until(predicate, timeout, lambda t: self.executor.spin_once(timeout_sec=t), message)

    def call(self, name: str) -> Trigger.Response:
        future = self.clients[name].call_async(Trigger.Request())
        self.spin_until(future.done, 30.0, f"recorder/{name} response")
        return future.result()

    def play(self, samples, until=lambda: False) -> bool:
        """Publish each sample at its stamp (wall clock = the recorder's clock), spinning meanwhile like a live
        sensor; returns early (True) once `until()` holds."""
        for sample in samples:
            delay = sample.stamp - time.time()
            if delay > 0:
                self.executor.spin_once(timeout_sec=delay)
            if until():
                return True
            self.pubs[sample.stream].publish(sample.msg)
        return until()

    def latest(self) -> dict:
        return self.status[-1] if self.status else {}
