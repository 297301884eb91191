"""Collision check of a 50-step action chunk with the MuJoCo checker on this CPU (ms per chunk), for a free chunk
(every step checked) and a chunk into the table (stops at the first colliding step), SO-100 and SO-101; plus the
time to build the checker and to compute the SRDF's disabled pairs. Writes bench/results/collision.json and
collision.png.

    scripts/run_in_env.sh python bench/bench_collision.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from mole_vla_ros.execution.collision_check import MujocoChunkChecker
from so100_driver.collision import compute_disabled_pairs
from so100_driver.srdf import COLLISION_SAMPLES

# -- settings ---------------------------------------------------------------------------------------------------
STEPS = 50
HOME = np.zeros(6)
READY = np.array([0.0, 0.0, 0.0, 1.2, 0.0, 0.6])
INTO_TABLE = np.array([0.0, 0.6, 0.3, 0.7, 0.0, 0.6])
RESULTS = Path(__file__).resolve().parent / "results"


def time_ms(fn, repeats: int) -> np.ndarray:
    fn()  # warm-up
    out = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        out[i] = (time.perf_counter() - start) * 1e3
    return out


def summary(ms: np.ndarray) -> dict[str, float]:
    return {
        "mean_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "min_ms": float(ms.min()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    results: dict[str, object] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "load_average_start": os.getloadavg()[0],
        "chunk_steps": STEPS,
        "repeats": args.repeats,
        "arms": {},
    }
    samples: dict[str, np.ndarray] = {}
    for arm in ("so100", "so101"):
        start = time.perf_counter()
        checker = MujocoChunkChecker(arm)
        build_ms = (time.perf_counter() - start) * 1e3
        free = np.linspace(HOME, READY, STEPS)
        colliding = np.linspace(HOME, INTO_TABLE, STEPS)
        assert checker.check(free) is None
        hit = checker.check(colliding)
        assert hit is not None
        free_ms = time_ms(lambda c=checker, f=free: c.check(f), args.repeats)
        hit_ms = time_ms(lambda c=checker, k=colliding: c.check(k), args.repeats)
        start = time.perf_counter()
        compute_disabled_pairs(arm, COLLISION_SAMPLES, 0)
        pairs_s = time.perf_counter() - start
        results["arms"][arm] = {
            "build_checker_ms": build_ms,
            "free_chunk": summary(free_ms),
            "colliding_chunk": {**summary(hit_ms), "first_colliding_step": hit.step},
            "per_waypoint_us": float(free_ms.mean() / STEPS * 1e3),
            "checked_self_pairs": len(checker.model.self_pairs),
            "disabled_pairs_compute_s": pairs_s,
            "disabled_pairs_samples": COLLISION_SAMPLES,
        }
        samples[f"{arm} free"] = free_ms
        samples[f"{arm} into table (stops at step {hit.step})"] = hit_ms
        print(f"{arm}: free 50-step chunk {free_ms.mean():.3f} ms (p99 {np.percentile(free_ms, 99):.3f})")
    results["load_average_end"] = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "collision.json").write_text(json.dumps(results, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.boxplot(list(samples.values()), orientation="horizontal", tick_labels=list(samples), showfliers=False)
    ax.set_xlabel(f"ms per {STEPS}-step chunk (MuJoCo checker, {args.repeats} repeats)")
    ax.set_title("Collision check of an action chunk")
    fig.tight_layout()
    fig.savefig(RESULTS / "collision.png", dpi=120)
    print(f"wrote {RESULTS / 'collision.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
