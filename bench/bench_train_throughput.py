"""Training throughput (samples/s) of the tiny preset at 1 and 2 CPU ranks (gloo DDP under torchrun).

Each layout gets the same 2 cores: 1 rank x 2 threads, 1 rank x 1 thread, 2 ranks x 1 thread; per-rank batch 8,
synthetic data, fp32. The first WARMUP steps are not timed. Other jobs on this machine skew all of it: the load
average is recorded.

    scripts/run_in_env.sh python bench/bench_train_throughput.py [--steps 30]
writes bench/results/train_throughput.json and bench/results/train_throughput.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"
WARMUP = 3
BATCH = 8
LAYOUTS = {"1 rank x 2 threads": (1, 2), "1 rank x 1 thread": (1, 1), "2 ranks x 1 thread": (2, 1)}


def worker(steps: int, threads: int, result: str) -> None:
    import torch

    from mole_vla_ros.train.data import synthetic_dataset
    from mole_vla_ros.train.distributed import DistributedTrainer, runtime_from_env, shutdown
    from mole_vla_ros.train.train import TrainConfig

    torch.set_num_threads(threads)
    rt = runtime_from_env(torch.device("cpu"))
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(dataset="synthetic", out=out, steps=steps + WARMUP, batch_size=BATCH, save_every=10**6)
        trainer = DistributedTrainer(cfg, rt, synthetic_dataset(episodes=8, frames=24, size=32), precision="fp32")
        for _ in range(WARMUP):
            trainer.train_step()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        elapsed = time.perf_counter() - start
        samples = steps * trainer.samples_per_step  # batch x ranks (x grad-accum): what the training logs count
    if rt.is_main:
        Path(result).write_text(json.dumps({"samples_per_s": samples / elapsed}))
    shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--worker", nargs=3, metavar=("STEPS", "THREADS", "RESULT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(int(args.worker[0]), int(args.worker[1]), args.worker[2])
        return
    load_start, results = os.getloadavg(), {}
    for name, (ranks, threads) in LAYOUTS.items():
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
            cmd += [__file__, "--worker", str(args.steps), str(threads), f.name]
            subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
            results[name] = json.loads(Path(f.name).read_text())["samples_per_s"]
        print(name, round(results[name], 1), "samples/s", flush=True)
    OUT.mkdir(exist_ok=True)
    record = {
        "command": f"scripts/run_in_env.sh python bench/bench_train_throughput.py --steps {args.steps}",
        "preset": "tiny",
        "batch_per_rank": BATCH,
        "samples_per_s": results,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
    }
    (OUT / "train_throughput.json").write_text(json.dumps(record, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(list(results), list(results.values()))
    ax.set_ylabel("samples/s (tiny preset, CPU)")
    ax.set_title("Training throughput, same 2 cores")
    fig.tight_layout()
    fig.savefig(OUT / "train_throughput.png", dpi=120)


if __name__ == "__main__":
    main()
