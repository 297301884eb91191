"""Command-stream jitter of ChunkExecutorNode at 50 Hz while CPU-heavy fake inference runs in the same process.

Goal (issue 6): p99 of |tick period - 20 ms| under 5 ms, i.e. the executor is never delayed by the model.
Loads: none; torch inference (matmuls in a worker thread: releases the GIL like the real policy's kernels);
python inference (a pure-Python loop that holds the GIL: the worst case for a same-process policy); the same
torch load in a separate process (the deployed layout: policy_node and chunk_executor are separate processes).
Two measures: period jitter |t[i+1] - t[i] - 20 ms| (a late tick counts twice) and lateness of each tick behind
the timer's 20 ms grid (rcl timers do not drift, so this is the delay a command actually suffers).
Other processes on the machine add to both: the JSON records the load average at the start.
Chunks of 30 actions at 30 fps are fed every 0.5 s so the executor really streams.

    scripts/run_in_env.sh python bench/bench_executor.py [--seconds 10]
writes bench/results/executor.json and bench/results/executor.png
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import threading
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import rclpy
import torch

from mole_msgs.msg import ActionChunk
from mole_vla_ros import conversions, qos
from mole_vla_ros.nodes.chunk_executor_node import ChunkExecutorNode
from so100_driver.executors import HandoffMultiThreadedExecutor

# ---- settings
SECONDS = 10.0  # timed stage per load
BURN_IN = 1.0  # s discarded at the start of each load
CONTROL_RATE = 50.0  # Hz
GOAL_P99_MS = 5.0
SEED = 0
OUT = Path(__file__).parent / "results"


def torch_inference(stop: threading.Event) -> None:
    torch.manual_seed(SEED)
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    while not stop.is_set():
        for _ in range(20):
            a = torch.tanh(a @ b)


def python_inference(stop: threading.Event) -> None:
    total = 0
    while not stop.is_set():
        for i in range(200_000):
            total += i * i % 7


def torch_inference_process(stop: threading.Event) -> None:
    ctx = multiprocessing.get_context("spawn")
    flag = ctx.Event()
    proc = ctx.Process(target=_torch_child, args=(flag,), daemon=True)
    proc.start()
    stop.wait()
    flag.set()
    proc.join(timeout=10)


def _torch_child(flag: object) -> None:
    torch.set_num_threads(1)
    torch_inference(flag)


LOADS = {
    "idle": None,
    "torch_inference": torch_inference,
    "python_gil_inference": python_inference,
    "torch_inference_other_process": torch_inference_process,
}


def lateness_ms(ticks: np.ndarray) -> np.ndarray:
    """Delay of each tick behind the nominal grid, ms (grid anchored at the earliest-aligned tick)."""
    period = 1.0 / CONTROL_RATE
    offsets = ticks - ticks[0]
    late = offsets - np.round(offsets / period) * period
    return (late - late.min()) * 1e3


def run_load(load: str, seconds: float) -> np.ndarray:
    with rclpy.init():
        node = ChunkExecutorNode()
        feeder = rclpy.create_node("bench_chunk_feeder")
        pub = feeder.create_publisher(ActionChunk, "mole/action_chunk", qos.RELIABLE)
        positions = np.repeat(np.linspace(0.0, 0.3, 30)[:, None], 6, axis=1)

        def feed() -> None:
            stamp = feeder.get_clock().now().to_msg()
            pub.publish(conversions.build_action_chunk(positions, stamp, fps=30.0))

        feeder.create_timer(0.5, feed)
        executor = HandoffMultiThreadedExecutor(num_threads=3)  # what the node's main() spins on
        executor.add_node(node)
        executor.add_node(feeder)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        stop = threading.Event()
        worker = threading.Thread(target=LOADS[load], args=(stop,), daemon=True) if LOADS[load] else None
        spinner.start()
        if worker:
            worker.start()
        time.sleep(BURN_IN)
        node.tick_times.clear()
        time.sleep(seconds)
        ticks = np.array(node.tick_times)
        stop.set()
        executor.shutdown(timeout_sec=5.0)
        spinner.join(timeout=5.0)
        if worker:
            worker.join(timeout=5.0)
        node.destroy_node()
        feeder.destroy_node()
    return ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=SECONDS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    results, jitters = {}, {}
    load_average = os.getloadavg()
    for load in LOADS:
        ticks = run_load(load, args.seconds)
        jitter = np.abs(np.diff(ticks) - 1.0 / CONTROL_RATE) * 1e3
        late = lateness_ms(ticks)
        jitters[load] = jitter
        results[load] = {
            "ticks": len(ticks),
            "expected_ticks": int(args.seconds * CONTROL_RATE),
            "jitter_p50_ms": float(np.percentile(jitter, 50)),
            "jitter_p99_ms": float(np.percentile(jitter, 99)),
            "jitter_max_ms": float(jitter.max()),
            "lateness_p99_ms": float(np.percentile(late, 99)),
            "goal_met": bool(np.percentile(jitter, 99) < GOAL_P99_MS),
        }
        r = results[load]
        print(
            f"{load:>30}: {r['ticks']}/{r['expected_ticks']} ticks, jitter p50 {r['jitter_p50_ms']:.3f} ms, "
            f"p99 {r['jitter_p99_ms']:.3f} ms, max {r['jitter_max_ms']:.3f} ms, lateness p99 "
            f"{r['lateness_p99_ms']:.3f} ms, goal p99<{GOAL_P99_MS} ms: {'met' if r['goal_met'] else 'MISSED'}"
        )
    summary = {
        "control_rate_hz": CONTROL_RATE,
        "seconds_per_load": args.seconds,
        "goal_p99_ms": GOAL_P99_MS,
        "torch_threads": 1,
        "load_average_at_start": load_average,
        "cpu_count": os.cpu_count(),
        "loads": results,
    }
    (OUT / "executor.json").write_text(json.dumps(summary, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(7, 4))
    for load, jitter in jitters.items():
        ax.plot(np.sort(jitter), np.linspace(0, 1, len(jitter)), label=load)
    ax.axvline(GOAL_P99_MS, color="k", linestyle="--", label=f"goal p99 < {GOAL_P99_MS} ms")
    ax.axhline(0.99, color="grey", linestyle=":")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("|tick period - 20 ms| (ms)")
    ax.set_ylabel("fraction of ticks")
    ax.set_title("Chunk executor command jitter at 50 Hz (same-process load)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "executor.png", dpi=120)
    print(f"wrote {OUT / 'executor.json'} and {OUT / 'executor.png'}")


if __name__ == "__main__":
    main()
