"""Recorder benchmark: two 640x480 cameras at 30 fps (+ joint states and actions at 100 Hz) published by a second
process, recorded by RecorderNode over real DDS: fps achieved, frames dropped, the recorder's CPU use; then the
bag converter's throughput (frames/s) on a bag of the same streams.

    scripts/run_in_env.sh python bench/bench_recorder.py        # -> bench/results/recorder.json + recorder.png

The live run is made twice: with Fast DDS's default transports, and with `config/fastdds_large_images.xml` (a 32 MB
shared-memory segment). By default a 640x480 RGB image (921 KB) does not fit the 512 KB segment, goes over UDP in
64 KB fragments, and a best-effort image is lost whenever one fragment is: on this 2-core machine a bare subscriber
got ~13 of 30 images/s per camera that way, and all 30 with the large segment.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# ---- settings --------------------------------------------------------------------------------------------
SECONDS = 10.0  # recorded episode length, s
FPS = 30  # camera and dataset rate, Hz
JOINT_HZ = 100.0  # joint_states and action rate, Hz
SIZE = (480, 640)  # camera image (H, W), px
CAMERAS = ("top", "wrist")
VCODEC = "libx264"
BAG_SECONDS = 3.0  # converter benchmark bag length, s
RESULTS = Path(__file__).parent / "results"
LARGE_IMAGES_PROFILE = Path(__file__).parents[1] / "config" / "fastdds_large_images.xml"


def patterns(seed: int, n: int = FPS):
    """Moving gradients: cheap to make, not free to encode (unlike a flat image)."""
    import numpy as np

    y, x = np.mgrid[0 : SIZE[0], 0 : SIZE[1]]
    return [
        np.stack([(x + 8 * i + seed * 40) % 256, (y + 4 * i) % 256, (x + y + seed * 90) % 256], -1).astype(np.uint8)
        for i in range(n)
    ]


def messages(t: float, k: int, images: dict):
    """(topic, msg) of everything due at stamp t: the k-th joint tick, and camera frames on every 1/FPS."""
    import numpy as np
    from sensor_msgs.msg import Image, JointState

    from mole_vla_ros.conversions import seconds_to_stamp
    from so100_driver.joints import JOINT_NAMES

    stamp = seconds_to_stamp(t)
    q = 0.3 * np.sin(t + np.arange(6))
    out = []
    for topic in ("joint_states", "leader/joint_states"):
        msg = JointState(name=list(JOINT_NAMES), position=q.tolist())
        msg.header.stamp = stamp
        out.append((topic, msg))
    per_frame = round(JOINT_HZ / FPS)
    if k % per_frame == 0:
        for name, frames in images.items():
            pixels = frames[(k // per_frame) % len(frames)]
            msg = Image(height=SIZE[0], width=SIZE[1], encoding="rgb8", is_bigendian=0, step=SIZE[1] * 3)
            msg.header.stamp = stamp
            msg.data = pixels.tobytes()
            out.append((f"{name}/image_raw", msg))
    return out


def publisher() -> None:
    """The second process: publishes the streams in real time until killed."""
    import rclpy
    from sensor_msgs.msg import Image, JointState

    from mole_vla_ros import qos

    images = {name: patterns(i) for i, name in enumerate(CAMERAS)}
    with rclpy.init():
        node = rclpy.create_node("bench_streams")
        pubs = {f"{c}/image_raw": node.create_publisher(Image, f"{c}/image_raw", qos.SENSOR_DATA) for c in CAMERAS}
        for topic in ("joint_states", "leader/joint_states"):
            pubs[topic] = node.create_publisher(JointState, topic, qos.RELIABLE)
        start, k = time.time(), 0
        while True:
            t = start + k / JOINT_HZ
            time.sleep(max(0.0, t - time.time()))
            for topic, msg in messages(t, k, images):
                pubs[topic].publish(msg)
            k += 1


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its live children (the recorder's encoder process), s."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # exited meanwhile
                total += cpu_seconds(int(child))
    return total


def bench_live(tmp: Path, profile: Path | None = None) -> dict:
    import rclpy
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from so100_driver.testing.ros_harness import NodeProcess, isolate_ros_environment, wait_until

    isolate_ros_environment()
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": str(profile)} if profile else {}
    topics = "[" + ",".join(f"'{c}/image_raw'" for c in CAMERAS) + "]"
    names = "[" + ",".join(f"'{c}'" for c in CAMERAS) + "]"
    args = ["--ros-args", "-p", f"root:={tmp / 'live'}", "-p", f"fps:={FPS}", "-p", "task:=bench"]
    args += ["-p", f"camera_topics:={topics}", "-p", f"camera_names:={names}", "-p", f"vcodec:={VCODEC}"]
    with (
        NodeProcess(__file__, ["--publisher"], env=env, name="streams"),
        NodeProcess("mole_vla_ros.nodes.recorder_node", args, env=env) as rec,
        rclpy.init(),
    ):
        node = rclpy.create_node("bench_probe")
        status: list[dict] = []
        node.create_subscription(String, "recorder/status", lambda m: status.append(json.loads(m.data)), 10)
        start, stop = (node.create_client(Trigger, f"recorder/{n}") for n in ("start", "stop"))

        def call(client):
            future = client.call_async(Trigger.Request())
            rclpy.spin_until_future_complete(node, future, timeout_sec=120)
            return future.result()

        spin = lambda t: rclpy.spin_once(node, timeout_sec=t)  # noqa: E731
        wait_until(lambda: start.service_is_ready() and status, 30, spin, f"recorder\n{rec.tail()}")
        wait_until(lambda: call(start).success, 30, spin, f"start\n{rec.tail()}")
        cpu0, wall0 = cpu_seconds(rec.proc.pid), time.monotonic()
        wait_until(lambda: time.monotonic() - wall0 > SECONDS, SECONDS + 5, spin, "episode")
        during = status[-1]
        answer = call(stop)
        cpu1, wall1 = cpu_seconds(rec.proc.pid), time.monotonic()
        node.destroy_node()
    final = during
    return {
        "transport": f"Fast DDS profile {profile.name}" if profile else "Fast DDS default",
        "stop": answer.message,
        "seconds": wall1 - wall0,
        "frames": int(answer.message.split(": ")[1].split(" frames")[0]) if answer.success else 0,
        "fps_target": FPS,
        "fps_achieved_at_end": float(answer.message.split("(")[1].split(" fps")[0]) if answer.success else 0.0,
        "dropped_during": final.get("dropped"),
        "stale_during": final.get("stale"),
        "late_during": final.get("late"),
        "received_during": final.get("received"),
        "writer_backlog_at_end": final.get("backlog"),
        "recorder_cpu_percent": 100.0 * (cpu1 - cpu0) / (wall1 - wall0),  # with its encoder process
    }


def bench_converter(tmp: Path) -> dict:
    from rclpy.serialization import serialize_message

    from mole_vla_ros.data.bag2lerobot import BagSpec, convert, write_bag

    images = {name: patterns(i) for i, name in enumerate(CAMERAS)}
    types = {"image_raw": "sensor_msgs/msg/Image"}
    records = []
    t0 = 1000.0
    for k in range(int(BAG_SECONDS * JOINT_HZ)):
        t = t0 + k / JOINT_HZ
        for topic, msg in messages(t, k, images):
            msgtype = types.get(topic.rsplit("/", 1)[-1], "sensor_msgs/msg/JointState")
            records.append((f"/{topic}", msgtype, round((t + 0.002) * 1e9), serialize_message(msg)))
    write_bag(tmp / "bag", records)
    spec = BagSpec(cameras={c: f"/{c}/image_raw" for c in CAMERAS}, fps=FPS, task="bench", vcodec=VCODEC)
    summary = convert([tmp / "bag"], tmp / "from_bag", spec)
    return {
        "bag_seconds": BAG_SECONDS,
        "frames": summary["frames"],
        "seconds": summary["seconds"],
        "frames_per_second": summary["frames_per_second"],
    }


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The machine is shared: the load average says how much else ran meanwhile.
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        live_default = bench_live(Path(tmp) / "default")
        live = bench_live(Path(tmp) / "large", LARGE_IMAGES_PROFILE)
        load_live = os.getloadavg()
        converter = bench_converter(Path(tmp))
    result = {
        "settings": {
            "seconds": SECONDS,
            "fps": FPS,
            "cameras": list(CAMERAS),
            "size": list(SIZE),
            "joint_hz": JOINT_HZ,
            "vcodec": VCODEC,
            "cpu_count": os.cpu_count(),
        },
        "loadavg_1_5_15": {"before": load_before, "after_live": load_live, "after": os.getloadavg()},
        "live": live,
        "live_default_transport": live_default,
        "converter": converter,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "recorder.json").write_text(json.dumps(result, indent=2))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    axes[0].bar(
        ["target", "default\nDDS", "large SHM\nsegment"],
        [FPS, live_default["fps_achieved_at_end"], live["fps_achieved_at_end"]],
        color=["grey", "tab:cyan", "tab:blue"],
    )
    axes[0].set_ylabel("frames / s")
    axes[0].set_title(f"live: 2 x {SIZE[1]}x{SIZE[0]} @ {FPS} fps ({VCODEC})", fontsize=9)
    axes[1].bar(
        ["default\nDDS", "large SHM\nsegment"],
        [live_default["recorder_cpu_percent"], live["recorder_cpu_percent"]],
        color="tab:orange",
    )
    axes[1].set_ylabel("recorder + encoder, % of one core")
    axes[1].set_title(f"{os.cpu_count()} cores", fontsize=9)
    axes[2].bar(["bag -> LeRobot"], [converter["frames_per_second"]], color="tab:green")
    axes[2].axhline(FPS, color="grey", ls="--", lw=1)
    axes[2].set_ylabel("frames / s (dashed: real time)")
    fig.tight_layout()
    fig.savefig(RESULTS / "recorder.png", dpi=100)
    for run in (live_default, live):
        print(f"live ({run['transport']}): {run['stop']}; recorder CPU {run['recorder_cpu_percent']:.0f}% of a core")
    print(f"converter: {converter['frames_per_second']:.1f} frames/s ({converter['frames']} frames)")
    print(f"load average before {load_before[0]:.2f}, after the live run {load_live[0]:.2f} ({os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    if "--publisher" in sys.argv:
        publisher()
    raise SystemExit(main())
