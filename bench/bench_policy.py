"""MoLe-VLA chunk latency on CPU at batch 1, SmolVLM2-500M shapes (random weights), per layer budget.

Per budget (100/75/50/25% of the 16 kept layers): vision / LLM / expert seconds (best of REPEATS after a warm-up),
analytic FLOPs per stage and the share of the CPU's fp32 peak each stage reaches, peak RSS. Also, at 50%:
the three `skip_mode`s (latency here; quality on the tiny synthetic overfit task) and int8 dynamic quantisation.
Writes bench/results/policy.json and policy.png.

    scripts/run_in_env.sh python bench/bench_policy.py [--threads 2] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from mole_vla_ros.policy import MoLeConfig, MoLePolicy
from mole_vla_ros.policy.flops import chunk_flops
from mole_vla_ros.policy.testing import fixed_noise, tiny_policy

# -- settings ---------------------------------------------------------------------------------------------------
SEED = 0
BUDGETS = (1.0, 0.75, 0.5, 0.25)
INPUT_SIZES = (512, 384)  # 512 = SmolVLA's vision pass; 384 = our preset's default
PEAK_GFLOPS = 170.0  # fp32 matmul peak of this CPU on 2 threads (DESIGN.md section 4)
CAMERA = (480, 640)
RESULTS = Path(__file__).resolve().parent / "results"
STAGES = ("vision", "llm", "expert")


def batch() -> dict:
    gen = torch.Generator().manual_seed(SEED)
    return {
        "images": [torch.rand(1, 3, *CAMERA, generator=gen)],
        "instruction": ["pick up the red cube"],
        "state": torch.randn(1, 6, generator=gen),
    }


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_chunk(policy: MoLePolicy, budget: float, repeats: int) -> dict[str, float]:
    """Best-of-`repeats` seconds per stage (each stage's own minimum) after one warm-up call."""
    obs = batch()
    noise = fixed_noise(policy, 1)
    policy.predict_action_chunk(obs, budget, noise)
    runs = [policy.predict_action_chunk(obs, budget, noise).timings for _ in range(repeats)]
    return {k: min(r[k] for r in runs) for k in (*STAGES, "total")}


def row(policy: MoLePolicy, budget: float, repeats: int) -> dict:
    seconds = time_chunk(policy, budget, repeats)
    flops = chunk_flops(policy.config, budget)
    share = {k: flops[k] / 1e9 / max(seconds[k], 1e-9) / PEAK_GFLOPS for k in (*STAGES, "total")}
    return {
        "budget": budget,
        "active_layers": policy.config.num_active(budget),
        "seconds": seconds,
        "gflops": {k: v / 1e9 for k, v in flops.items()},
        "share_of_peak": share,
        "peak_rss_mib": peak_rss_mib(),
    }


def overfit_quality(skip_mode: str, steps: int) -> float:
    """Chunk MSE / action variance at 50% budget after `steps` of training on 4 synthetic examples (lower=better)."""
    policy = tiny_policy(seed=SEED, skip_mode=skip_mode, w_kd=0.1).train()
    cfg = policy.config
    gen = torch.Generator().manual_seed(5)
    images, state = torch.rand(4, 3, 32, 32, generator=gen), torch.randn(4, cfg.state_dim, generator=gen)
    phase = torch.linspace(0, 1, cfg.chunk_size)[None, :, None]
    actions = torch.sin(3 * phase + images.mean((1, 2, 3))[:, None, None] * 6 + state[:, None, :]) * 0.8
    words = ["pick", "place", "push", "pull"]
    train = {
        "images": [images.repeat_interleave(4, 0)],
        "instruction": [w for w in words for _ in range(4)],
        "state": state.repeat_interleave(4, 0),
        "action": actions.repeat_interleave(4, 0),
    }
    optim = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    for _ in range(steps):
        loss, _ = policy(train, budget=0.5)
        optim.zero_grad()
        loss.backward()
        optim.step()
    obs = {"images": [images], "instruction": words, "state": state}
    pred = policy.predict_action_chunk(obs, 0.5, fixed_noise(policy, 4)).actions
    return float((pred - actions).pow(2).mean() / actions.var())


def plot(results: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, len(results["by_input_size"]), figsize=(11, 4), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, (size, rows) in zip(axes, results["by_input_size"].items(), strict=True):
        labels = [f"{int(r['budget'] * 100)}%\n({r['active_layers']} L)" for r in rows]
        bottom = [0.0] * len(rows)
        for stage in STAGES:
            values = [r["seconds"][stage] for r in rows]
            ax.bar(labels, values, bottom=bottom, label=stage)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        for x, r in enumerate(rows):
            ax.text(
                x,
                bottom[x],
                f"{r['seconds']['total']:.2f}s\n{r['gflops']['total']:.0f} GF",
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.axhline(results["reference"]["smolvla_16_layers_s"], color="k", ls="--", lw=0.8, label="SmolVLA 16L")
        ax.axhline(results["reference"]["smolvla_8_layers_s"], color="gray", ls=":", lw=0.8, label="SmolVLA 8L")
        ax.set_title(f"input {size}px, {results['threads']} threads, batch 1")
        ax.set_xlabel("layer budget")
    axes[0].set_ylabel("seconds per 50-action chunk")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overfit-steps", type=int, default=150)
    parser.add_argument(
        "--quick", action="store_true", help="default input size only, skip modes at 50%% only, no int8"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    results: dict = {
        "load_average_at_start": list(os.getloadavg()),
        "device": platform.processor() or platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "peak_gflops_fp32": PEAK_GFLOPS,
        "camera": CAMERA,
        "repeats": args.repeats,
        "reference": {"smolvla_16_layers_s": 3.56, "smolvla_8_layers_s": 2.3, "note": "LeRobot SmolVLA, DESIGN.md"},
        "by_input_size": {},
    }
    for size in INPUT_SIZES[1:] if args.quick else INPUT_SIZES:
        policy = MoLePolicy(MoLeConfig.preset("smolvlm2-500m", input_size=size)).eval()
        rows = []
        for budget in BUDGETS:
            rows.append(row(policy, budget, args.repeats))
            s = rows[-1]["seconds"]
            print(
                f"input {size} budget {budget:.2f}: total {s['total']:.3f}s = vision {s['vision']:.3f} "
                f"+ llm {s['llm']:.3f} + expert {s['expert']:.3f}",
                flush=True,
            )
        results["by_input_size"][str(size)] = rows
        del policy
    results["skip_modes"] = {}
    for mode in ("skip_expert", "project", "reuse"):
        policy = MoLePolicy(MoLeConfig.preset("smolvlm2-500m", skip_mode=mode)).eval()
        entry = {"latency_50": row(policy, 0.5, args.repeats)}
        if not args.quick:
            entry["latency_100"] = row(policy, 1.0, args.repeats)
        del policy
        entry["overfit_rel_mse_50"] = overfit_quality(mode, args.overfit_steps)
        results["skip_modes"][mode] = entry
        seconds = entry["latency_50"]["seconds"]
        print(
            f"skip_mode {mode}: 50% {seconds['total']:.3f}s (expert {seconds['expert']:.3f}s), "
            f"overfit rel. MSE {entry['overfit_rel_mse_50']:.4f}",
            flush=True,
        )
    if not args.quick:
        policy = MoLePolicy(MoLeConfig.preset("smolvlm2-500m")).eval()
        obs, noise = batch(), fixed_noise(policy, 1)
        reference = policy.predict_action_chunk(obs, 0.5, noise).actions
        policy.quantize_int8_()
        entry = row(policy, 0.5, args.repeats)
        entry["max_abs_action_change_vs_fp32"] = float(
            (policy.predict_action_chunk(obs, 0.5, noise).actions - reference).abs().max()
        )
        results["int8_50"] = entry
        print(f"int8 50%: total {entry['seconds']['total']:.3f}s", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "policy.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS / "policy.png")
    print(f"wrote {RESULTS / 'policy.json'} at {time.strftime('%H:%M:%S')}")


if __name__ == "__main__":
    main()
