"""Camera-to-chunk latency over real DDS: from a camera frame's capture stamp to the ActionChunk computed from it
arriving at a subscriber, split into where the time goes.

The robot side (this process) publishes two 480x640 rgb8 cameras at 30 fps (stamped when the frame is made: the
capture stamp a camera driver would set) and /joint_states at 50 Hz, and asks for a chunk every REQUEST_PERIOD s as
the chunk executor does (the policy runs back to back once inference is slower than that). The policy node (the real
PolicyNode, in a child process: the deployed layout) serves two models:
- default: the shipped checkpoint (src/mole_vla_ros/checkpoints/default; cameras scene + wrist);
- smolvlm2-500m: SmolVLM2-500M shapes with random weights at 384 px (bench_policy.py's model; one camera, scene),
  the size a real deployment runs.
each at layer budgets 1.0 and 0.5 (set live through mole/set_layer_budget; chunks still computed at the old budget
are left out by their active layer count).

Per chunk (the child wraps the policy's `predict_action_chunk` to log when inference started and ended):
- observation age at inference start = inference start - observation stamp (waiting for a request, the image's way
  to the policy, decoding, resizing, batching);
- inference = the model's predict_action_chunk;
- delivery = arrival at the subscriber - chunk ready (`header.stamp + inference_latency`: publishing, DDS, the
  subscriber's executor);
- total = arrival - observation stamp (what the executor's stale-action drop sees).
Policy threads: POLICY_THREADS. Other processes on this shared 2-core machine add to all of it: the load average is
recorded at the start and end of every cell.

    scripts/run_in_env.sh python bench/bench_latency.py [--chunks 30] [--quick]
    scripts/run_in_env.sh python bench/bench_latency.py --models default --dds-profile config/fastdds_large_images.xml
writes bench/results/latency.json and bench/results/latency.png (latency_<profile>.json/png with --dds-profile)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

# ---- settings
CAMERA_HW = (480, 640)  # a USB camera's raw frames; the policy resizes
CAMERA_FPS = 30.0
REQUEST_PERIOD = 0.25  # s
BUDGETS = (1.0, 0.5)
POLICY_THREADS = 2
MODELS = {
    "default": {"cameras": ("scene", "wrist"), "chunks": 30, "time_cap_s": 60.0},
    "smolvlm2-500m": {"cameras": ("scene",), "chunks": 12, "time_cap_s": 90.0},
}
QUICK_CHUNKS = 15
START_TIMEOUT = 300.0  # s for the child to build/load its model and answer
OUT = Path(__file__).parent / "results"


# ---------------------------------------------------------------------------------------------- policy child


class TimedPolicy:
    """The policy, with each predict_action_chunk's wall-clock start and end appended to a JSON-lines file."""

    def __init__(self, policy: object, log_path: str) -> None:
        self._policy = policy
        self._log = open(log_path, "a", buffering=1)  # noqa: SIM115 (lives as long as the node)

    def __getattr__(self, name: str) -> object:
        return getattr(self._policy, name)

    def predict_action_chunk(self, *args: object, **kwargs: object) -> object:
        start = time.time()  # the node stamps with the ROS clock: system time, the same clock
        pred = self._policy.predict_action_chunk(*args, **kwargs)
        self._log.write(json.dumps({"start": start, "end": time.time()}) + "\n")
        return pred

    def watch_images(self, buffer: object) -> None:
        """Also log when each camera frame (by its stamp) reached the node's observation buffer."""
        update = buffer.update_image

        def logged(camera: str, rgb: object, stamp: float) -> None:
            update(camera, rgb, stamp)
            self._log.write(json.dumps({"image_stamp": stamp, "buffered": time.time()}) + "\n")

        buffer.update_image = logged


def policy_child(model: str, log_path: str, ros_args: list[str]) -> int:
    import torch

    from mole_vla_ros.nodes.policy_node import PolicyNode, joint_range_stats
    from mole_vla_ros.policy import MoLeConfig, MoLePolicy
    from mole_vla_ros.train.checkpoint import default_checkpoint
    from so100_driver.node_runner import run

    torch.set_num_threads(POLICY_THREADS)
    torch.manual_seed(0)
    if model == "default":
        policy = MoLePolicy.from_pretrained(str(default_checkpoint()))
    else:
        policy = MoLePolicy(MoLeConfig.preset(model))
        policy.set_normalization(joint_range_stats())
    timed = TimedPolicy(policy.eval(), log_path)

    def create() -> PolicyNode:
        node = PolicyNode(policy=timed)
        timed.watch_images(node.buffer)
        return node

    return run(create, ["policy_child", *ros_args], num_threads=4)


# ---------------------------------------------------------------------------------------------- robot side


class RobotSide:
    """Cameras, joint states and chunk requests out; chunks in, with their arrival times."""

    def __init__(self, cameras: tuple[str, ...]) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Header, String

        from mole_msgs.msg import ActionChunk
        from mole_msgs.srv import SetLayerBudget
        from mole_vla_ros import conversions, qos
        from so100_driver.joints import JOINT_NAMES

        self._conv, self._image_type, self._names = conversions, Image, JOINT_NAMES
        self.node = n = rclpy.create_node("latency_robot_side")
        self.arrivals: list[dict] = []
        self._lock = threading.Lock()
        self._published: deque[float] = deque(maxlen=100_000)
        self._frame = np.random.default_rng(0).integers(0, 255, (*CAMERA_HW, 3), dtype=np.uint8)
        self._joints = n.create_publisher(JointState, "/joint_states", qos.RELIABLE)
        self._images = [n.create_publisher(Image, f"camera/{c}/image_raw", qos.SENSOR_DATA) for c in cameras]
        request = n.create_publisher(Header, "mole/chunk_request", qos.RELIABLE)
        self.instruction = n.create_publisher(String, "/mole/instruction", qos.RELIABLE)
        self.budget_client = n.create_client(SetLayerBudget, "mole/set_layer_budget")
        self._budget_request = SetLayerBudget.Request
        n.create_subscription(ActionChunk, "mole/action_chunk", self._on_chunk, qos.RELIABLE)
        n.create_timer(0.02, self._publish_state)
        n.create_timer(1.0 / CAMERA_FPS, self._publish_images)
        n.create_timer(REQUEST_PERIOD, lambda: request.publish(Header(stamp=self._stamp())))
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _stamp(self) -> object:
        return self.node.get_clock().now().to_msg()

    def _publish_state(self) -> None:
        self._joints.publish(self._conv.positions_to_joint_state(np.zeros(6), self._names, self._stamp()))

    def _publish_images(self) -> None:
        for pub in self._images:  # each frame stamped as it is captured (made), like a camera driver
            pub.publish(self._conv.numpy_to_image(self._frame, "rgb8", self._stamp(), "camera"))
            self._published.append(time.time())

    def frames_published(self, since: float) -> int:
        return sum(1 for t in list(self._published) if t > since)

    def _on_chunk(self, msg: object) -> None:
        arrival = self.node.get_clock().now().nanoseconds * 1e-9
        row = {
            "arrival": arrival,
            "stamp": self._conv.stamp_to_seconds(msg.header.stamp),
            "inference_latency": float(msg.inference_latency),
            "active": len(msg.active_layers),
            "num_layers": int(msg.num_layers),
        }
        with self._lock:
            self.arrivals.append(row)

    def count(self) -> int:
        with self._lock:
            return len(self.arrivals)

    def peek(self) -> list[dict]:
        with self._lock:
            return list(self.arrivals)

    def take(self) -> list[dict]:
        with self._lock:
            rows, self.arrivals = self.arrivals, []
        return rows

    def set_budget(self, budget: float, timeout: float = 30.0) -> None:
        if not self.budget_client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError("mole/set_layer_budget not available")
        done = threading.Event()
        future = self.budget_client.call_async(self._budget_request(budget=budget))
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout) or not future.result().success:
            raise RuntimeError(f"set_layer_budget({budget}) failed: {future.result()}")

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()


COLUMNS = ("obs_age_at_inference_start", "frame_to_buffer", "in_buffer", "inference", "delivery", "total")


def split(rows: list[dict], timings: list[dict], buffered: dict[float, float]) -> tuple[np.ndarray, list[dict]]:
    """Seconds per chunk, one column per COLUMNS name, and the matched chunks. Each chunk is matched to the logged
    inference whose end is nearest its ready time (stamp + inference_latency); chunks without one (an inference
    outside `timings`) are left out. obs age = frame_to_buffer (the observation's frame from its stamp to the
    node's buffer: DDS, the node's image callback queue, decoding) + in_buffer (waiting there for the inference)."""
    ends = np.array([t["end"] for t in timings])
    out, matched = [], []
    for r in rows:
        if not len(ends):
            break
        ready = r["stamp"] + r["inference_latency"]
        i = int(np.argmin(np.abs(ends - ready)))
        if abs(ends[i] - ready) > 0.05:  # publishing takes well under this; no match means a lost log line
            continue
        start, stamp = timings[i]["start"], r["stamp"]
        to_buffer = buffered.get(round(stamp, 6), math.nan) - stamp  # nan: the oldest input was the joint state
        age = start - stamp
        out.append((age, to_buffer, age - to_buffer, ends[i] - start, r["arrival"] - ready, r["arrival"] - stamp))
        matched.append(r)
    return np.array(out).reshape(-1, len(COLUMNS)), matched


def read_log(path: str, since: float) -> tuple[list[dict], dict[float, float]]:
    """The inferences started after `since`, and image stamp -> time buffered (first arrival wins; every camera's
    frames, since all cameras are stamped apart)."""
    timings, buffered = [], {}
    for line in Path(path).read_text().splitlines():
        entry = json.loads(line) if line.endswith("}") else {}  # the child may be mid-line
        if "start" in entry and entry["start"] > since:
            timings.append(entry)
        elif "image_stamp" in entry and entry["buffered"] > since:
            buffered.setdefault(round(entry["image_stamp"], 6), entry["buffered"])
    return timings, buffered


def stats(values: np.ndarray) -> dict[str, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return {"p50_ms": math.nan, "p95_ms": math.nan, "n": 0}
    p50, p95 = np.percentile(values, [50, 95]) * 1e3
    return {"p50_ms": float(p50), "p95_ms": float(p95), "n": len(values)}


def measure(model: str, chunks: int, time_cap: float) -> dict:
    from std_msgs.msg import String

    from so100_driver.testing.ros_harness import NodeProcess

    cameras = MODELS[model]["cameras"]
    topics = "[" + ",".join(f"camera/{c}/image_raw" for c in cameras) + "]"
    handle, log_path = tempfile.mkstemp(prefix=f"latency-{model}-", suffix=".jsonl")
    os.close(handle)
    args = ["--policy-child", model, "--timing-log", log_path, "--ros-args", "-p", f"image_topics:={topics}"]
    args += ["-p", "max_observation_age:=2.0", "-p", "time_limit:=3600.0"]
    env = {"OMP_NUM_THREADS": str(POLICY_THREADS)}
    cells = {}
    with NodeProcess(str(Path(__file__).resolve()), args, env=env, name=f"policy_{model}") as policy:
        robot = RobotSide(cameras)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            # The child builds its model, then subscribes; the task is set once (a repeat would pre-empt a slow
            # model's chunk in flight), again only if nothing came back for a long while.
            last_sent = -math.inf
            while robot.count() < 2:
                if robot.instruction.get_subscription_count() and time.monotonic() - last_sent > 60.0:
                    robot.instruction.publish(String(data="pick up the red cube"))
                    last_sent = time.monotonic()
                time.sleep(0.5)
                assert policy.alive() and time.monotonic() < deadline, policy.tail()
            for budget in BUDGETS:
                load_start = os.getloadavg()
                robot.set_budget(budget)
                budget_set = time.time()  # chunks whose inference started before this ran at the old budget
                robot.take()
                start = time.monotonic()
                parts, rows = np.zeros((0, len(COLUMNS))), []
                while len(parts) < chunks and time.monotonic() - start < time_cap:
                    time.sleep(0.5)
                    assert policy.alive(), policy.tail()
                    timings, buffered = read_log(log_path, budget_set)
                    parts, rows = split(robot.peek(), timings, buffered)
                published = robot.frames_published(since=budget_set)
                seconds = time.time() - budget_set
                assert len(parts), f"no chunk at budget {budget} within {time_cap} s\n{policy.tail()}"
                cells[f"{budget:.1f}"] = {
                    "chunks": len(parts),
                    "active_layers": rows[0]["active"] if rows else None,
                    "num_layers": rows[0]["num_layers"] if rows else None,
                    **{name: stats(parts[:, i]) for i, name in enumerate(COLUMNS)},
                    "inference_latency_field": stats(np.array([r["inference_latency"] for r in rows])),
                    # chunks whose oldest input was the joint state, not a frame (frame_to_buffer is then nan)
                    "oldest_input_joint_state_share": float(np.mean(np.isnan(parts[:, 1]))),
                    # frames/s over all cameras: published by the robot side, and reaching the policy's buffer
                    "frames_published_per_s": published / seconds,
                    "frames_buffered_per_s": len(buffered) / seconds,
                    "loadavg_start": load_start,
                    "loadavg_end": os.getloadavg(),
                }
                c = cells[f"{budget:.1f}"]
                print(
                    f"{model} budget {budget:.1f}: {c['chunks']} chunks, total p50 {c['total']['p50_ms']:.1f} / p95 "
                    f"{c['total']['p95_ms']:.1f} ms = obs age {c['obs_age_at_inference_start']['p50_ms']:.1f} "
                    f"(to buffer {c['frame_to_buffer']['p50_ms']:.1f}, in buffer {c['in_buffer']['p50_ms']:.1f}) + "
                    f"inference {c['inference']['p50_ms']:.1f} + delivery {c['delivery']['p50_ms']:.1f} ms (p50s); "
                    f"frames/s published {c['frames_published_per_s']:.0f}, buffered {c['frames_buffered_per_s']:.0f}",
                    flush=True,
                )
        finally:
            robot.close()
            os.unlink(log_path)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=0, help="chunks per cell (default: per model, see MODELS)")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--quick", action="store_true", help=f"default checkpoint only, {QUICK_CHUNKS} chunks a cell")
    parser.add_argument("--policy-child", choices=list(MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--timing-log", help=argparse.SUPPRESS)
    parser.add_argument(
        "--dds-profile",
        help="Fast DDS profile for both processes (e.g. config/fastdds_large_images.xml); results go to "
        "latency_<profile name>.json/png",
    )
    args, ros_args = parser.parse_known_args()
    if args.policy_child:
        sys.exit(policy_child(args.policy_child, args.timing_log, ros_args))

    import rclpy

    from so100_driver.testing.ros_harness import isolate_ros_environment

    isolate_ros_environment()
    name = "latency"
    if args.dds_profile:  # inherited by the policy child
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(Path(args.dds_profile).resolve())
        name += "_" + Path(args.dds_profile).stem.removeprefix("fastdds_")
    models = ["default"] if args.quick else args.models
    wall_start, results = time.monotonic(), {}
    with rclpy.init():
        for model in models:
            chunks = QUICK_CHUNKS if args.quick else args.chunks or MODELS[model]["chunks"]
            results[model] = measure(model, chunks, MODELS[model]["time_cap_s"])
    record = {
        "what": "camera capture stamp -> ActionChunk at a subscriber, real PolicyNode in a child process over DDS "
        "(Fast DDS on one machine: shared memory, large messages fall back to UDP fragments unless a profile "
        "enlarges the segment)",
        "command": "scripts/run_in_env.sh python bench/bench_latency.py"
        + (" --quick" if args.quick else "")
        + (f" --models {' '.join(models)}" if not args.quick and models != list(MODELS) else "")
        + (f" --dds-profile {args.dds_profile}" if args.dds_profile else ""),
        "dds_profile": args.dds_profile,
        "camera": {"hw": CAMERA_HW, "fps": CAMERA_FPS, "encoding": "rgb8"},
        "cameras": {m: MODELS[m]["cameras"] for m in models},
        "request_period_s": REQUEST_PERIOD,
        "policy_threads": POLICY_THREADS,
        "cpu_count": os.cpu_count(),
        "loadavg_note": "shared machine: other agents' work adds to every number; compare the loadavg fields",
        "wall_s": round(time.monotonic() - wall_start, 1),
        "results": results,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(results, OUT / f"{name}.png", args.dds_profile)
    print(f"wrote {OUT / name}.json and .png in {record['wall_s']} s")


def plot(results: dict, path: Path, profile: str | None) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    parts = (("frame_to_buffer", "frame stamp -> policy buffer"), ("in_buffer", "in buffer until inference"))
    parts += (("inference", "inference"), ("delivery", "delivery"))
    for ax, (model, cells) in zip(axes[0], results.items(), strict=True):
        labels = list(cells)
        bottom = np.zeros(len(labels))
        for key, name in parts:
            values = np.nan_to_num([cells[b][key]["p50_ms"] for b in labels])
            ax.bar(labels, values, bottom=bottom, label=f"{name} (p50)")
            bottom += values
        p95 = [cells[b]["total"]["p95_ms"] for b in labels]
        ax.scatter(labels, p95, color="k", marker="_", s=400, zorder=3, label="total p95")
        ax.set_title(model)
        ax.set_xlabel("layer budget")
        ax.set_ylabel("camera stamp -> chunk at subscriber, ms")
        ax.legend(fontsize=8)
    fig.suptitle(f"Camera-to-chunk latency over DDS (policy node in its own process; profile: {profile or 'default'})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
