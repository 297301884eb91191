"""Driver benchmark: command-to-bus latency and achieved /joint_states rate under a 50 Hz trajectory stream.

arm_node runs in a child process against the simulated STS3215 bus (pty, real scservo_sdk at 1 Mbaud). This
process streams one-point JointTrajectory messages at STREAM_HZ, each with a rising target for shoulder_pan, and
timestamps (a) the publish and (b) the first sync-write packet on the bus whose shoulder_pan goal has reached that
target's tick (>=: the ramp only rises, so a later command's write also proves this one arrived; no command is left
out of the statistics). Latency = (b) - (a), both on this machine's monotonic clock (the fake bus runs in this
process). The machine is shared: a thread here measures how late a 5 ms sleep wakes ("scheduler_delay_ms") so a
slow tail can be told apart from the driver's own cost.
A second part runs leader_node (a leader arm on its own fake bus, read at LEADER_RATE) and records the achieved
rate of leader/joint_states (issue 11 asks for >= 100 Hz).
Run: scripts/run_in_env.sh python bench/bench_driver.py   -> bench/results/driver.json + driver.png
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

# Settings
STREAM_HZ = 50.0
DURATION_S = 10.0
WARMUP_S = 2.0
LEADER_RATE = 100.0
LEADER_DURATION_S = 5.0
CONTROL_RATE = 100.0
PUBLISH_RATE = 50.0
OUT = Path(__file__).resolve().parent / "results"

from so100_driver.testing.ros_harness import NodeProcess, isolate_ros_environment  # noqa: E402

isolate_ros_environment()

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from so100_driver.arm_node import COMMAND_QOS, JOINT_STATES_QOS  # noqa: E402
from so100_driver.calibration import default_calibration_path, load_calibration  # noqa: E402
from so100_driver.testing.fake_sts_bus import FakeStsBus  # noqa: E402


def scheduler_probe(stop: threading.Event, delays: list[float]) -> None:
    """How late this process gets the CPU back after a 5 ms sleep (the machine's own wake-up tail)."""
    while not stop.is_set():
        t = time.monotonic()
        time.sleep(0.005)
        delays.append((time.monotonic() - t - 0.005) * 1e3)


def leader_rate() -> dict:
    """Achieved leader/joint_states rate of leader_node against a fake leader bus."""
    bus = FakeStsBus().start()
    node = NodeProcess(
        "so100_driver.leader_node",
        ["--ros-args", "-p", f"port:={bus.port}", "-p", f"calibration_file:={default_calibration_path()}",
         "-p", f"rate:={LEADER_RATE}"],
    ).start()  # fmt: skip
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node("bench_leader", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    stamps: list[float] = []
    probe.create_subscription(
        JointState, "leader/joint_states", lambda _m: stamps.append(time.monotonic()), JOINT_STATES_QOS
    )
    try:
        deadline = time.monotonic() + 30
        while not stamps and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        start = time.monotonic()
        while time.monotonic() - start < LEADER_DURATION_S:
            executor.spin_once(timeout_sec=0.1)
    finally:
        node.stop()
        probe.destroy_node()
        executor.shutdown()
        rclpy.shutdown(context=context)
        bus.stop()
    js = np.array([s for s in stamps if s >= start])
    gaps = np.diff(js) * 1e3
    return {
        "requested_hz": LEADER_RATE,
        "rate_hz": float((len(js) - 1) / (js[-1] - js[0])) if len(js) > 1 else 0.0,
        "gap_ms": {"p50": float(np.percentile(gaps, 50)), "p99": float(np.percentile(gaps, 99))} if len(gaps) else {},
    }


def main() -> int:
    cal = load_calibration(default_calibration_path()).joints["shoulder_pan"]
    bus = FakeStsBus().start()
    node = NodeProcess(
        "so100_driver.arm_node",
        [
            "--ros-args",
            "-p", f"port:={bus.port}",
            "-p", f"control_rate:={CONTROL_RATE}",
            "-p", f"publish_rate:={PUBLISH_RATE}",
            "-p", "max_step:=1.0",
            "-p", "max_acceleration:=1000.0",
        ],
    ).start()  # fmt: skip
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node("bench_driver", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    stamps: list[float] = []
    probe.create_subscription(JointState, "joint_states", lambda _m: stamps.append(time.monotonic()), JOINT_STATES_QOS)
    pub = probe.create_publisher(JointTrajectory, "joint_trajectory_controller/joint_trajectory", COMMAND_QOS)
    stop_probe = threading.Event()
    delays: list[float] = []
    threading.Thread(target=scheduler_probe, args=(stop_probe, delays), daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        while not stamps and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        if not stamps:
            print(node.tail(), file=sys.stderr)
            return 1
        sent: dict[int, float] = {}
        period = 1.0 / STREAM_HZ
        start = time.monotonic()
        k = 0
        while time.monotonic() - start < WARMUP_S + DURATION_S:
            # A slow ramp (0.1 rad/s, within every cap) so each command's first tick on the bus equals its target.
            target = -0.6 + 0.002 * k
            msg = JointTrajectory(joint_names=["shoulder_pan"])
            msg.points = [JointTrajectoryPoint(positions=[target])]  # time_from_start 0: go now
            t = time.monotonic()
            pub.publish(msg)
            if t - start >= WARMUP_S:
                sent.setdefault(cal.to_ticks(target), t)  # first publish of each tick value only
            k += 1
            next_time = start + k * period
            while (left := next_time - time.monotonic()) > 0:
                executor.spin_once(timeout_sec=left)
        measured_start = start + WARMUP_S
        end = start + WARMUP_S + DURATION_S
    finally:
        stop_probe.set()
        code = node.stop()
        probe.destroy_node()
        executor.shutdown()
        rclpy.shutdown(context=context)
        bus.stop()
    writes = [(t, int.from_bytes(e[1], "little")) for t, e in bus.sync_writes if 1 in e]
    rising = 1 if cal.to_ticks(0.1) > cal.to_ticks(0.0) else -1  # the calibration may reverse the direction
    latencies = []
    for tick, t_pub in sent.items():
        hit = next((t for t, value in writes if rising * (value - tick) >= 0 and t >= t_pub), None)
        if hit is not None:
            latencies.append((hit - t_pub) * 1e3)
    latencies_ms = np.array(latencies)
    js = np.array([s for s in stamps if measured_start <= s <= end])
    rate = (len(js) - 1) / (js[-1] - js[0]) if len(js) > 1 else 0.0
    gaps_ms = np.diff(js) * 1e3
    result = {
        "setup": {
            "stream_hz": STREAM_HZ,
            "duration_s": DURATION_S,
            "control_rate_hz": CONTROL_RATE,
            "publish_rate_hz": PUBLISH_RATE,
            "bus": "fake STS3215 x6 on a pty, real scservo_sdk, 1 Mbaud",
            "cpu_count": os.cpu_count(),
        },
        "commands_matched": len(latencies_ms),
        "commands_sent_unique": len(sent),
        "latency_ms": {
            "p50": float(np.percentile(latencies_ms, 50)),
            "p90": float(np.percentile(latencies_ms, 90)),
            "p99": float(np.percentile(latencies_ms, 99)),
            "max": float(latencies_ms.max()),
        },
        "joint_states_rate_hz": float(rate),
        "joint_states_gap_ms": {"p50": float(np.percentile(gaps_ms, 50)), "p99": float(np.percentile(gaps_ms, 99))},
        "scheduler_delay_ms": {
            "p50": float(np.percentile(delays, 50)),
            "p99": float(np.percentile(delays, 99)),
            "max": float(np.max(delays)),
        },
        "load_average_1min": os.getloadavg()[0],
        "node_exit_code": code,
    }
    result["leader"] = leader_rate()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "driver.json").write_text(json.dumps(result, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.hist(latencies_ms, bins=40)
    a.axvline(5.0, color="r", linestyle="--", label="5 ms goal")
    a.set(xlabel="command-to-bus latency (ms)", ylabel="commands", title="trajectory msg -> sync write")
    a.legend()
    b.hist(gaps_ms, bins=40)
    b.set(xlabel="gap between joint_states (ms)", title=f"joint_states: {rate:.1f} Hz")
    fig.tight_layout()
    fig.savefig(OUT / "driver.png", dpi=100)
    print(
        f"latency p50 {result['latency_ms']['p50']:.2f} ms, p99 {result['latency_ms']['p99']:.2f} ms "
        f"({len(latencies_ms)}/{len(sent)} matched); joint_states {rate:.1f} Hz; "
        f"5 ms sleep late by p99 {result['scheduler_delay_ms']['p99']:.1f} ms, load {os.getloadavg()[0]:.1f}; "
        f"leader_node {result['leader']['rate_hz']:.1f} Hz"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
