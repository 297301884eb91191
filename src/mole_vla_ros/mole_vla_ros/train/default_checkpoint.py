"""Rebuild the shipped default checkpoint in one command: record, train, evaluate, write the card.

    python -m mole_vla_ros.train.default_checkpoint            # ~1 h on 2 CPU cores, see the card for timings
    python -m mole_vla_ros.train.default_checkpoint --eval-episodes 10 --steps 500   # quicker, weaker

1. `mole-vla record`: scripted-expert pick demonstrations (scene + wrist cameras, 96x96, 30 Hz) -> <work>/data
2. `mole-vla train`: the tiny preset (chunk 16), full stage then router + CogKD at budget 0.5 -> <work>/run
   and the same run with --no-cogkd -> <work>/run_nokd (same seed: its full stage is bit-identical, so the
   two differ only by the distillation in the router stage)
3. `mole-vla eval`: the seeded episodes of the card's table (full, MoLe 0.5/0.25, static, random; MoLe 0.5 of
   the no-CogKD run)
4. copies <work>/run/final to src/mole_vla_ros/checkpoints/default and writes its README card with the table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from mole_vla_ros.train import evaluate
from mole_vla_ros.train import train as train_cli

SHIP_DIR = Path(__file__).resolve().parents[2] / "checkpoints" / "default"  # the source tree, not share/
RECORD_ARGS = ["--tasks", "pick", "--cameras", "scene,wrist", "--size", "96", "96", "--vcodec", "libx264"]
TRAIN_ARGS = [
    "--preset",
    "tiny",
    "--set",
    "chunk_size=16",
    "--lr",
    "5e-4",
    "--warmup",
    "100",
    "--budget",
    "0.5",
    "--stage",
    "both",
    "--full-fraction",
    "0.5",
    "--save-every",
    "250",
    "--log-every",
    "25",
    "--seed",
    "0",
]
EVAL_SEED = 100_000  # far from the recording seeds (1000...), so evaluation scenes were never demonstrated


def train_command(work: Path, run: str, steps: int, batch_size: int, threads: int) -> list[str]:
    out = work / run
    resume = ["--resume"] if (out / "checkpoints" / "last").is_file() else []
    extra = ["--no-cogkd"] if run == "run_nokd" else []
    return [
        "--dataset",
        str(work / "data"),
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--batch-size",
        str(batch_size),
        "--threads",
        str(threads),
        *TRAIN_ARGS,
        *extra,
        *resume,
    ]


def write_card(folder: Path, rows: list[dict], command: str, timings: dict[str, float]) -> None:
    """README.md of the checkpoint: what it is, the data, the training settings and its evaluation table."""
    dataset = json.loads((folder / "dataset.json").read_text())
    train = json.loads((folder / "train_config.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    size_mb = (folder / "model.safetensors").stat().st_size / 1e6
    table = evaluate.markdown_table(rows) if rows else "(not evaluated yet)"
    text = f"""# Default MoLe-VLA checkpoint (tiny, trained on sim demonstrations)

A small policy so the simulated SO-100 runs with no download: `mole-vla eval` and the bringup load it by default.
It is *not* a pretrained SmolVLM2: every weight was trained from scratch on the data below, on a CPU.

- Model: preset `tiny` with chunk_size={config["chunk_size"]}, {config["num_kept_layers"]} kept decoder layers (the
  STAR router keeps {train["budget"]:.0%} of them), {config["num_steps"]} denoising steps; {size_mb:.1f} MB of weights.
- Data: {dataset["episodes"]} scripted-expert episodes ({dataset["frames"]} frames, {dataset["fps"]:.0f} Hz), cameras
  {", ".join(dataset["cameras"])} at {dataset["image_hw"][0]}x{dataset["image_hw"][1]}, tasks:
  {"; ".join(dataset["tasks"])}.
- Training: {train["completed_steps"]} steps, batch {train["batch_size"]}, AdamW lr {train["lr"]} (warm-up
  {train["warmup"]}, cosine), stages: full model for {train["full_fraction"]:.0%} of the steps, then router + CogKD
  (kd weight {train["kd_weight"]}, balance {train["balance_weight"]}); seed {train["seed"]}.
- Training time: {train.get("train_wall_s", 0) / 60:.1f} min of optimizer steps on this machine (2 CPU cores
  shared with other jobs, 1 torch thread); this rebuild: {_timings(timings)}.
- Normalisation statistics: `stats.json` (also inside `model.safetensors`).

Reproduce (records, trains, evaluates, rewrites this folder):

```
{command}
```

## Evaluation (MuJoCo sim, in-process, seeds {EVAL_SEED}..., same seeds in every row)

Success with a Wilson 95% interval; task time over successful episodes; latency = wall-clock per chunk on this CPU.
Held-out action MSE: open-loop squared error (rad²) of the predicted chunk against the scripted expert on 20
held-out demonstrations recorded at the evaluation seeds (every 5th frame, same denoising noise in every row).

{table}
"""
    (folder / "README.md").write_text(text)


def _timings(timings: dict[str, float]) -> str:
    return ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()) or "not measured"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mole_vla_ros.train.default_checkpoint", description=__doc__.split("\n")[0]
    )
    p.add_argument("--work", default="runs/default_checkpoint", help="folder for the dataset and the training run")
    p.add_argument("--episodes", type=int, default=100, help="demonstrations to record")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core CPU)")
    p.add_argument("--ship-dir", default=str(SHIP_DIR), help="where the checkpoint is copied")
    args = p.parse_args(argv)
    work, timings = Path(args.work), {}
    from mole_vla_ros.data import record

    start = time.perf_counter()
    if not (work / "data" / "meta" / "info.json").is_file():
        rc = record.main(
            [
                "--episodes",
                str(args.episodes),
                "--seed",
                "1000",
                "--out",
                str(work / "data"),
                "--no-progress",
                *RECORD_ARGS,
            ]
        )
        if rc != 0:
            print("recording failed", file=sys.stderr)
            return rc
    if not (work / "heldout" / "meta" / "info.json").is_file():  # expert demos at the evaluation seeds
        record.main(
            [
                "--episodes",
                "20",
                "--seed",
                str(EVAL_SEED),
                "--out",
                str(work / "heldout"),
                "--no-progress",
                *RECORD_ARGS,
            ]
        )
    timings["record"] = time.perf_counter() - start
    start = time.perf_counter()
    for run in ("run", "run_nokd"):
        train_cli.main(train_command(work, run, args.steps, args.batch_size, args.threads))
        timings[f"train {run}"] = time.perf_counter() - start
        start = time.perf_counter()
    rows, _ = evaluate.evaluate(
        work / "run" / "final",
        args.eval_episodes,
        EVAL_SEED,
        ["pick"],
        ["full", "mole", "static", "random"],
        [0.5, 0.25],
        label="default (CogKD)",
        heldout=work / "heldout",
    )
    rows += evaluate.evaluate(
        work / "run_nokd" / "final",
        args.eval_episodes,
        EVAL_SEED,
        ["pick"],
        ["mole"],
        [0.5],
        label="no CogKD",
        heldout=work / "heldout",
    )[0]
    timings["eval"] = time.perf_counter() - start
    ship = Path(args.ship_dir)
    shutil.rmtree(ship, ignore_errors=True)
    shutil.copytree(work / "run" / "final", ship)
    evaluate.write_table(rows, work / "eval")
    command = "python -m mole_vla_ros.train.default_checkpoint " + " ".join(argv or sys.argv[1:])
    (ship / "eval.json").write_text(
        json.dumps({"seed": EVAL_SEED, "episodes": args.eval_episodes, "rows": rows}, indent=2) + "\n"
    )
    write_card(ship, rows, command.strip(), timings)
    print(evaluate.markdown_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
