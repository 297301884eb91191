"""`mole-vla eval`: seeded sim episodes per task and layer mode, written as a table (CSV + Markdown + JSON) and a plot.

    mole-vla eval --checkpoint src/mole_vla_ros/checkpoints/default --episodes 50 --seed 0 --tasks pick \\
        --mode full,mole,static,random --budget 0.5 --out bench/results/eval

Every row runs the same seeds (seed, seed+1, ...; each seed fixes the cube layout and the named cube), so rows
differ only by the policy's layer selection. `--append` adds rows to an existing table (e.g. a checkpoint trained
without CogKD, under its own `--label`).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from mole_vla_ros.execution.chunk_queue import QueueConfig
from mole_vla_ros.policy import MoLePolicy
from mole_vla_ros.train.checkpoint import default_checkpoint, read_json
from mole_vla_ros.train.rollout import MODES, heldout_action_error, layer_mode, run_episode, summarise

DEFAULT_CHECKPOINT = default_checkpoint()
COLUMNS = (
    "label",
    "mode",
    "budget",
    "episodes",
    "successes",
    "success_rate",
    "ci_low",
    "ci_high",
    "mean_task_time_s",
    "mean_active_layers",
    "num_layers",
    "latency_ms_mean",
    "latency_ms_p95",
    "gflops_per_chunk",
    "heldout_action_mse",
)


def recorded_cameras(checkpoint: str | Path) -> tuple[list[str], tuple[int, int]]:
    """The cameras (in the policy's input order) and image size (H, W) the checkpoint's dataset was recorded with,
    from its dataset.json; the sim renders at that size (defaults: the scene camera at 224x224)."""
    meta = read_json(Path(checkpoint), "dataset.json") or {}
    height, width = meta.get("image_hw") or (224, 224)
    return list(meta.get("cameras") or ["scene"]), (int(height), int(width))


def evaluate(
    checkpoint: str | Path,
    episodes: int,
    seed: int,
    tasks: list[str],
    modes: list[str],
    budgets: list[float],
    label: str | None = None,
    execution: str = "async",
    time_limit: float | None = None,
    progress: bool = True,
    heldout: str | Path | None = None,
) -> tuple[list[dict], list[dict]]:
    """Rows of the table and per-episode records for every (mode, budget) over `episodes` seeds per task kind."""
    from so100_driver.sim.env import SimConfig, SimEnv

    policy = MoLePolicy.from_pretrained(checkpoint)
    meta = read_json(Path(checkpoint), "dataset.json") or {}
    cameras, (height, width) = recorded_cameras(checkpoint)
    fps = float(meta.get("fps") or 30.0)
    label = label or Path(checkpoint).name
    held = None
    if heldout is not None:
        from mole_vla_ros.train.data import load_dataset

        held = load_dataset(heldout, policy.config.input_size, cameras=cameras)
    rows, records = [], []
    for kind in tasks:
        sim = SimConfig(
            cameras=tuple(cameras),
            width=int(width),
            height=int(height),
            control_hz=fps,
            task_kinds=(kind,),
            **({"time_limit": time_limit} if time_limit else {}),
        )
        with SimEnv(sim) as env:
            for mode in modes:
                for budget in [1.0] if mode == "full" else budgets:
                    results = []
                    start = time.perf_counter()
                    selection = layer_mode(policy, mode, budget, seed)
                    for s in range(seed, seed + episodes):
                        results.append(
                            run_episode(
                                policy,
                                env,
                                s,
                                cameras,
                                selection,
                                queue_config=QueueConfig(mode=execution, arm=sim.arm),
                            )
                        )
                    held_selection = layer_mode(policy, mode, budget, seed)  # same random draws in every run
                    mse = None if held is None else heldout_action_error(policy, held, held_selection, seed=seed)
                    row = summarise(label, mode, budget, policy, results, len(cameras))
                    row |= {"task": kind, "heldout_action_mse": mse}
                    rows.append(row)
                    records += [
                        asdict(r) | {"label": label, "mode": mode, "budget": row["budget"], "task": kind}
                        for r in results
                    ]
                    if progress:
                        print(
                            f"{kind:6s} {mode:6s} budget {row['budget']:.2f}: {row['successes']}/{len(results)} "
                            f"({time.perf_counter() - start:.0f} s)",
                            file=sys.stderr,
                        )
    return rows, records


def write_table(rows: list[dict], out: Path, append: bool = False) -> list[dict]:
    """eval.csv, eval.md, eval.json and eval.png in `out` (appending to the rows already there if asked)."""
    out.mkdir(parents=True, exist_ok=True)
    if append and (out / "eval.json").is_file():
        rows = json.loads((out / "eval.json").read_text())["rows"] + rows
    (out / "eval.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    columns = ("task", *COLUMNS)
    with open(out / "eval.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out / "eval.md").write_text(markdown_table(rows) + "\n")
    plot(rows, out / "eval.png")
    return rows


def _fmt(value: object, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(rows: list[dict]) -> str:
    head = (
        "| checkpoint | task | mode | budget | success (95% CI) | task time s | active layers | latency ms "
        "(mean / p95) | GFLOPs/chunk | held-out action MSE rad² |"
    )
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        success = f"{r['successes']}/{r['episodes']} = {r['success_rate']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
        layers = f"{_fmt(r['mean_active_layers'], 1)} / {r['num_layers']}"
        latency = f"{_fmt(r['latency_ms_mean'], 1)} / {_fmt(r['latency_ms_p95'], 1)}"
        lines.append(
            f"| {r['label']} | {r.get('task', '-')} | {r['mode']} | {r['budget']:.2f} | {success} | "
            f"{_fmt(r['mean_task_time_s'])} | {layers} | {latency} | {r['gflops_per_chunk']:.4f} | "
            f"{_fmt(r.get('heldout_action_mse'), 4)} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{r['label']}\n{r['mode']} {r['budget']:.2f}" for r in rows]
    rate = [r["success_rate"] for r in rows]
    err = [[r["success_rate"] - r["ci_low"] for r in rows], [r["ci_high"] - r["success_rate"] for r in rows]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(rows) * 2), 3.8))
    ax1.bar(range(len(rows)), rate, yerr=err, capsize=4, color="tab:blue")
    ax1.set_ylim(0, 1)
    ax1.set_ylabel("success rate (Wilson 95% CI)")
    ax2.bar(range(len(rows)), [r["latency_ms_mean"] or 0 for r in rows], color="tab:orange")
    ax2.set_ylabel("chunk latency, ms (mean)")
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(rows)), names, fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _csv_list(text: str, kind: type) -> list:
    return [kind(x.strip()) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="mole-vla eval",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="policy folder (or hub id)")
    p.add_argument("--episodes", type=int, default=50, help="seeded episodes per task kind and row")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--tasks", default="pick", help="comma-separated task kinds (pick, stack)")
    p.add_argument("--mode", default="mole", help=f"comma-separated layer modes from {','.join(MODES)}")
    p.add_argument("--budget", default="0.5", help="comma-separated layer budgets for mole/static/random")
    p.add_argument("--label", help="row label (default: the checkpoint folder's name)")
    p.add_argument("--execution", choices=("async", "sync"), default="async", help="chunk queue mode")
    p.add_argument("--time-limit", type=float, help="episode limit, s (default: the sim's)")
    p.add_argument("--out", default="bench/results/eval", help="folder for eval.{csv,md,json,png}")
    p.add_argument("--append", action="store_true", help="add rows to the table already in --out")
    p.add_argument("--heldout", help="LeRobot dataset of held-out demonstrations: adds the open-loop action MSE")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = p.parse_args(argv)
    try:
        modes, budgets = _csv_list(args.mode, str), _csv_list(args.budget, float)
        bad = [m for m in modes if m not in MODES] + [b for b in budgets if not 0.0 < b <= 1.0]
        if bad or not modes or not budgets or args.episodes < (0 if args.heldout else 1):
            raise ValueError(f"bad --mode/--budget/--episodes: {bad or (modes, budgets, args.episodes)}")
    except ValueError as exc:
        p.error(str(exc))
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, records = evaluate(
        args.checkpoint,
        args.episodes,
        args.seed,
        _csv_list(args.tasks, str),
        modes,
        budgets,
        args.label,
        args.execution,
        args.time_limit,
        heldout=args.heldout,
    )
    out = Path(args.out)
    all_rows = write_table(rows, out, append=args.append)
    with open(out / "episodes.jsonl", "a" if args.append else "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    print(markdown_table(all_rows))
    return 0
