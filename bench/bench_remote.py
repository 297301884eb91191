"""End-to-end action latency with the policy node "local" vs "remote" (loopback here), and what images cost.

The robot side (this process) publishes /joint_states at 50 Hz, two cameras at 30 fps (the shipped default
checkpoint's `scene` and `wrist`), and asks for a chunk every REQUEST_PERIOD s as the chunk executor does. The
policy node (the shipped default checkpoint, CPU) runs in a child process:
- local:  default Fast DDS transports (shared memory between processes on one machine: the deployed single-computer
          layout);
- remote: FASTDDS_BUILTIN_TRANSPORTS=UDPv4 in the policy process, so every image and chunk goes through the network
          stack (loopback here; the serialisation and copy cost of a LAN, without its wire time).
For each, at two image sizes: 480x640 (a USB camera's raw frames) and 96x96 (the size the policy resizes to:
resizing on the robot before sending is the cheap-link option; compressed images are the other, see
docs/scale_out.md).

Measured per chunk: latency = chunk arrival on the robot side - its observation stamp (what the executor's
stale-action drop sees), and the policy's own observation-to-ready time (`inference_latency`: it includes the
images' way to the policy, their decoding and resizing, and the model); the difference is the chunk's way back.
Other processes on this 2-core machine add to all of it: the load average is recorded.

    scripts/run_in_env.sh python bench/bench_remote.py [--seconds 15]
writes bench/results/remote.json and bench/results/remote.png
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header, String

from mole_msgs.msg import ActionChunk
from mole_vla_ros import conversions, qos
from mole_vla_ros.train.checkpoint import default_checkpoint
from so100_driver.joints import JOINT_NAMES
from so100_driver.testing.ros_harness import NodeProcess, isolate_ros_environment

OUT = Path(__file__).parent / "results"
CAMERAS = ("scene", "wrist")
REQUEST_PERIOD = 0.3  # s: one chunk of 30 actions at 30 fps per 0.3 s keeps the executor's queue above half
SIZES = {"raw_480x640": (480, 640), "resized_96x96": (96, 96)}
LINKS = {"local": {}, "remote": {"FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"}}


class RobotSide:
    """Joint states, cameras and chunk requests out; chunks in, with their arrival times."""

    def __init__(self, hw: tuple[int, int]) -> None:
        self.node = rclpy.create_node("robot_side")
        n = self.node
        self.arrivals: list[tuple[float, float, float]] = []  # (arrival, observation stamp, inference_latency)
        self._lock = threading.Lock()
        self._frame = np.random.default_rng(0).integers(0, 255, (*hw, 3), dtype=np.uint8)
        self._joints = n.create_publisher(JointState, "/joint_states", qos.RELIABLE)
        self._images = [n.create_publisher(Image, f"camera/{c}/image_raw", qos.SENSOR_DATA) for c in CAMERAS]
        self._request = n.create_publisher(Header, "mole/chunk_request", qos.RELIABLE)
        self.instruction = n.create_publisher(String, "/mole/instruction", qos.RELIABLE)
        n.create_subscription(ActionChunk, "mole/action_chunk", self._on_chunk, qos.RELIABLE)
        n.create_timer(0.02, self._publish_state)
        n.create_timer(1 / 30, self._publish_images)
        n.create_timer(REQUEST_PERIOD, lambda: self._request.publish(Header(stamp=self._stamp())))
        self.executor = MultiThreadedExecutor(num_threads=3)
        self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _stamp(self):
        return self.node.get_clock().now().to_msg()

    def _publish_state(self) -> None:
        self._joints.publish(conversions.positions_to_joint_state(np.zeros(6), JOINT_NAMES, self._stamp()))

    def _publish_images(self) -> None:
        stamp = self._stamp()
        for pub in self._images:
            pub.publish(conversions.numpy_to_image(self._frame, "rgb8", stamp, "camera"))

    def _on_chunk(self, msg: ActionChunk) -> None:
        now = self.node.get_clock().now().nanoseconds * 1e-9
        with self._lock:
            self.arrivals.append((now, conversions.stamp_to_seconds(msg.header.stamp), msg.inference_latency))

    def take(self) -> np.ndarray:
        with self._lock:
            rows, self.arrivals = self.arrivals, []
        return np.array(rows).reshape(-1, 3)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()


def measure(link: str, hw: tuple[int, int], seconds: float) -> dict[str, float]:
    env = {"OMP_NUM_THREADS": "1", **LINKS[link]}
    args = ["--ros-args", "-p", f"checkpoint:={default_checkpoint()}", "-p", "max_observation_age:=2.0"]
    with NodeProcess("mole_vla_ros.nodes.policy_node", args, env=env, name=f"policy_{link}") as policy:
        robot = RobotSide(hw)
        try:
            deadline = time.monotonic() + 120.0
            while not robot.arrivals:  # the node loads its checkpoint, then answers once a task is set
                robot.instruction.publish(String(data="pick up the red cube"))
                time.sleep(1.0)
                assert policy.alive() and time.monotonic() < deadline, policy.tail()
            time.sleep(1.0)  # warm-up chunks
            robot.take()
            time.sleep(seconds)
            rows = robot.take()
        finally:
            robot.close()
    latency = (rows[:, 0] - rows[:, 1]) * 1e3
    inference = rows[:, 2] * 1e3
    return {
        "chunks": len(rows),
        "chunks_per_s": len(rows) / seconds,
        "latency_ms_median": float(np.median(latency)),
        "latency_ms_p90": float(np.percentile(latency, 90)),
        "inference_ms_median": float(np.median(inference)),
        "transport_ms_median": float(np.median(latency - inference)),
        "image_mb_per_s": 2 * 30 * hw[0] * hw[1] * 3 / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    isolate_ros_environment()
    load_start = os.getloadavg()
    results: dict[str, dict[str, dict[str, float]]] = {}
    with rclpy.init():
        for size, hw in SIZES.items():
            for link in LINKS:
                results.setdefault(size, {})[link] = row = measure(link, hw, args.seconds)
                print(size, link, json.dumps({k: round(v, 1) for k, v in row.items()}), flush=True)
    record = {
        "what": "observation stamp -> chunk on the robot side, policy node (default checkpoint, CPU) in a child "
        "process; local = shared-memory transport, remote = UDPv4 over loopback",
        "command": "scripts/run_in_env.sh python bench/bench_remote.py --seconds " + str(args.seconds),
        "request_period_s": REQUEST_PERIOD,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "results": results,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "remote.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(results)


def plot(results: dict[str, dict[str, dict[str, float]]]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    labels, width = list(results), 0.35
    x = np.arange(len(labels))
    for i, link in enumerate(LINKS):
        inf = [results[s][link]["inference_ms_median"] for s in labels]
        tra = [results[s][link]["transport_ms_median"] for s in labels]
        ax.bar(x + i * width, inf, width, label=f"{link}: obs -> chunk ready")
        ax.bar(x + i * width, tra, width, bottom=inf, label=f"{link}: chunk back to robot", alpha=0.6)
    ax.set_xticks(x + width / 2, labels)
    ax.set_ylabel("observation -> chunk on robot side, median ms")
    ax.set_title("Policy node local (shared memory) vs remote (UDPv4 loopback)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "remote.png", dpi=120)


if __name__ == "__main__":
    main()
