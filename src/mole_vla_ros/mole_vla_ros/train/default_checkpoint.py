"""Rebuild the shipped default checkpoint in one command: record, train, evaluate, write the card.

    python -m mole_vla_ros.train.default_checkpoint            # ~1.6 h on 2 CPU cores, 50 min of it the shipped run
    python -m mole_vla_ros.train.default_checkpoint --eval-episodes 10 --steps 500   # quicker, weaker

1. `mole-vla record`: scripted-expert pick demonstrations (scene + wrist cameras, 96x96, 30 Hz) -> <work>/data,
   and expert demonstrations at the evaluation seeds -> <work>/heldout (open-loop action error only)
2. `mole-vla train`, the shipped model: the tiny preset with 8 kept layers (chunk 16), the future-state and
   environment-state auxiliaries and the instruction FiLM of the visual tokens (config w_future, w_env_state,
   text_film), the expert at full depth at every
   budget (skip_mode project); the full stage for 60% of the steps,
   then the router stage with CogKD, each step at budget 0.5, 0.25 or 1.0 (--mixed-budgets) -> <work>/run (its
   full-stage model and training state: <work>/run/stage_full). The no-CogKD ablation forks that run at the stage
   change and trains its router stage without distillation -> <work>/run_nokd.
3. `mole-vla eval`: the seeded episodes of issue 7's table (full, MoLe 0.5/0.25 with CogKD, MoLe 0.5 without,
   static first half, random half, and the full-stage model), spread over --jobs processes
4. copies <work>/run/final to src/mole_vla_ros/checkpoints/default and writes its README card with the table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from mole_vla_ros.train import evaluate
from mole_vla_ros.train import train as train_cli

SHIP_DIR = Path(__file__).resolve().parents[2] / "checkpoints" / "default"  # the source tree, not share/
RECORD_ARGS = ["--tasks", "pick", "--cameras", "scene,wrist", "--size", "96", "96", "--vcodec", "libx264"]
# Training demonstrations only (the held-out ones stay the plain expert's): 30% of the episodes recover from a missed
# grasp and every executed target drifts (DART), so a cloned policy has seen how to get back on track (trained on
# clean demonstrations it never retried a missed grasp). The deliberate misses themselves are not recorded
# (--hide-misses): shown, a flow-matching policy reproduces them, since an episode's first frame does not say it misses.
DEMO_ARGS = ["--retry-share", "0.3", "--action-noise", "0.03", "--hide-misses"]
# 8 kept layers so that skipping half of them leaves the router a real choice (4 of 8, 70 sets, instead of 2 of 4).
MODEL_ARGS = [
    "--preset",
    "tiny",
    "--set",
    "chunk_size=16",
    "--set",
    "text_layers_total=8",
    "--set",
    "num_kept_layers=8",
    # Where the arm is 1.5 s ahead, predicted from the cognition token: without it the policy ignored the colour
    # word (swapping red/blue changed its chunk by 0.0000 rad²) and reached for whichever cube (see config.w_future).
    "--set",
    "w_future=1.0",
    "--set",
    "future_horizon=45",
    "--set",
    "text_film=true",
    # The cognition token also predicts the cube centres with the named cube first (the recording's
    # observation.environment_state, config.w_env_state): a direct target for reading the colour word. Without it the
    # previous checkpoint's future-state head aimed at the named cube in 42 of 90 first-frame probes (chance 30); with
    # it the environment-state head pointed at it in 86 of 90 by the end of the full stage (train/grounding.py).
    "--set",
    "w_env_state=1.0",
    "--set",
    "env_state_dim=9",
    # A skipped VLM layer hands the action expert its K/V projection of the passed-on hidden state and the expert
    # keeps all 8 layers (skip.py "project"). With "skip_expert" (the large models' default, where the expert's
    # denoising loop is most of the CPU time) this tiny expert ran 4 of its 8 layers at budget 0.5 and MoLe 50% fell
    # to 5/50 picks vs 14/50 at full depth; forked from the same full-stage model with "project": 11/50 vs 12/50.
    "--set",
    "skip_mode=project",
]
# 17,500 steps at lr 1e-3, 60% in the full stage: 50 min on one thread. The previous default, 28,000 steps at 5e-4
# (75% full), took 92 min for MoLe 50% 43/50. At 1e-3 a 10,500-step full stage already matched its full row (45/50),
# and the router stage is what a shorter run starves: 14,000 steps (3,500 router) gave MoLe 50% 34/50 and `make demo`
# 6 of 10 red runs; 7,000 router steps gave it back (the card: 9 of 10). What the shorter run costs: `make demo`'s
# own scene, 11 of 20 in-process at 50% against 17 of 20, and slower picks in the bringup.
LR, WARMUP, FULL_FRACTION = 1e-3, 100, 0.6
# A light balance term and a 10x router learning rate: at balance 0.01 and the shared rate the router's scores
# stayed near uniform, i.e. it did not route by input.
ROUTER_ARGS = ["--budget", "0.5", "--balance-weight", "0.002", "--router-lr-scale", "10"]
# The router stage trains each step at 0.5, 0.25 or 1.0: at 0.5 only, the full-depth path drifted (full row 0/50,
# held-out error 0.0766 vs 0.0064 before the router stage); mixed, it kept working (8/50, 0.0067).
MIXED_ARGS = ["--mixed-budgets", "0.25,1.0"]
# No --colour-swap (train/augment.py): with half the samples swapped, the full-stage model read the colour word less,
# not more (swapping it moved the chunk by 0.0001 rad² vs 0.0007 without; 1/20 picks vs 3/20 at full depth); on the 600
# recovery demonstrations the full-stage model picked 12/50 with it, 17/50 without (another cube lifted: 8 vs 9 of 30).
COMMON_ARGS = ["--save-every", "250", "--log-every", "25", "--seed", "0"]
SHIPPED_RUN, NOKD_RUN = "run", "run_nokd"
EVAL_SEED = 100_000  # far from the recording seeds (1000...), so evaluation scenes were never demonstrated
# (policy folder under the work folder, label, mode, budget): the rows of issue 7's table, all on the same seeds.
EVAL_ROWS = (
    (f"{SHIPPED_RUN}/final", "default (CogKD)", "full", 1.0),
    (f"{SHIPPED_RUN}/final", "default (CogKD)", "mole", 0.5),
    (f"{SHIPPED_RUN}/final", "default (CogKD)", "mole", 0.25),
    (f"{NOKD_RUN}/final", "no CogKD", "mole", 0.5),
    (f"{SHIPPED_RUN}/final", "default (CogKD)", "static", 0.5),
    (f"{SHIPPED_RUN}/final", "default (CogKD)", "random", 0.5),
    (f"{SHIPPED_RUN}/stage_full", "before the router stage", "full", 1.0),
)


def record_command(work: Path, episodes: int) -> list[str]:
    """`mole-vla record` arguments of the training demonstrations (seeds 1000...)."""
    where = ["--seed", "1000", "--out", str(work / "data"), "--no-progress"]
    return ["--episodes", str(episodes), *where, *RECORD_ARGS, *DEMO_ARGS]


def heldout_command(work: Path) -> list[str]:
    """Plain expert demonstrations at the evaluation seeds: the held-out action error's reference."""
    return ["--episodes", "20", "--seed", str(EVAL_SEED), "--out", str(work / "heldout"), "--no-progress", *RECORD_ARGS]


def _resume(out: Path) -> list[str]:
    return ["--resume"] if (out / "checkpoints" / "last").is_file() else []


def train_command(work: Path, steps: int, batch_size: int, threads: int, lr: float = LR) -> list[str]:
    """The shipped model: the full stage, then the router stage with CogKD at mixed budgets, in one run."""
    return _run_command(work, work / SHIPPED_RUN, steps, batch_size, threads, lr)


def nokd_command(work: Path, steps: int, batch_size: int, threads: int, lr: float = LR) -> list[str]:
    """The no-CogKD ablation: the shipped run forked at its stage change, so it differs in the distillation only
    (same full-stage model, batches, budgets drawn and learning-rate schedule)."""
    fork = ["--fork", str(work / SHIPPED_RUN / "stage_full"), "--no-cogkd"]
    return _run_command(work, work / NOKD_RUN, steps, batch_size, threads, lr) + fork


def _run_command(work: Path, out: Path, steps: int, batch_size: int, threads: int, lr: float) -> list[str]:
    return [
        *("--dataset", str(work / "data"), "--out", str(out), "--steps", str(steps)),
        *("--batch-size", str(batch_size), "--threads", str(threads), *MODEL_ARGS),
        *("--lr", str(lr), "--warmup", str(WARMUP), "--stage", "both", "--full-fraction", str(FULL_FRACTION)),
        *ROUTER_ARGS,
        *MIXED_ARGS,
        *COMMON_ARGS,
        *_resume(out),
    ]


def _eval_row(spec: tuple[str, str, str, float, int, str]) -> tuple[list[dict], list[dict]]:
    checkpoint, label, mode, budget, episodes, heldout = spec
    torch.set_num_threads(1)
    return evaluate.evaluate(checkpoint, episodes, EVAL_SEED, ["pick"], [mode], [budget], label=label, heldout=heldout)


def evaluate_rows(work: Path, episodes: int, jobs: int) -> list[dict]:
    """Issue 7's table, one process per row at a time (each with its own sim), rows in EVAL_ROWS order."""
    specs = [
        (str(work / folder), label, mode, budget, episodes, str(work / "heldout"))
        for folder, label, mode, budget in EVAL_ROWS
    ]
    if jobs <= 1:
        results = [_eval_row(spec) for spec in specs]
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_eval_row, specs))
    return [row for rows, _ in results for row in rows]


def write_card(folder: Path, rows: list[dict], command: str, timings: dict[str, float]) -> None:
    """README.md of the checkpoint: what it is, the data, the training settings and its evaluation table."""
    dataset = json.loads((folder / "dataset.json").read_text())
    train = json.loads((folder / "train_config.json").read_text())
    full_steps = round(train["full_fraction"] * train["steps"])
    budgets = ", ".join(f"{b:g}" for b in (train["budget"], *train.get("mixed_budgets", ())))
    config = json.loads((folder / "config.json").read_text())
    size_mb = (folder / "model.safetensors").stat().st_size / 1e6
    table = evaluate.markdown_table(rows) if rows else "(not evaluated yet)"
    text = f"""# Default MoLe-VLA checkpoint (tiny, trained on sim demonstrations)

A small policy so the simulated SO-100 runs with no download: `mole-vla eval` and the bringup load it by default.
It is *not* a pretrained SmolVLM2: every weight was trained from scratch on the data below, on a CPU.

- Model: preset `tiny` with chunk_size={config["chunk_size"]}, {config["num_kept_layers"]} kept decoder layers (the
  STAR router keeps {train["budget"]:.0%} of them; skip mode `{config["skip_mode"]}`, see skip.py),
  {config["num_steps"]} denoising steps; {size_mb:.1f} MB of weights.
- Data: {dataset["episodes"]} scripted-expert episodes ({dataset["frames"]} frames, {dataset["fps"]:.0f} Hz), cameras
  {", ".join(dataset["cameras"])} at {dataset["image_hw"][0]}x{dataset["image_hw"][1]}, tasks:
  {"; ".join(dataset["tasks"])}.
- Training, one {train["steps"]}-step run (batch {train["batch_size"]}, AdamW lr {train["lr"]}, warm-up
  {train["warmup"]}, cosine to 10%, seed {train["seed"]}{_colour_swap(train)}): the full model for {full_steps} steps,
  then the router stage for {train["steps"] - full_steps} steps, each step at a layer budget drawn from {budgets},
  with CogKD (kd weight {train["kd_weight"]}, balance {train["balance_weight"]}, router lr
  x{train.get("router_lr_scale", 1.0)}). The no-CogKD row: the same run forked at the stage change
  (`--fork run/stage_full --no-cogkd`: same full-stage model, batches, budgets and schedule, no distillation). The
  "before the router stage" row: the full-stage model itself (`run/stage_full`).
- Training time: {train.get("train_wall_s", 0) / 60:.1f} min of optimizer steps on this machine (2 CPU cores);
  this rebuild: {_timings(timings)}.
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


def _colour_swap(train: dict) -> str:
    share = train.get("colour_swap", 0.0)
    return f"; colour swap on {share:.0%} of the samples (train/augment.py)" if share else ""


def _timings(timings: dict[str, float]) -> str:
    return ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()) or "not measured"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mole_vla_ros.train.default_checkpoint", description=__doc__.split("\n")[0]
    )
    p.add_argument("--work", default="runs/default_checkpoint", help="folder for the dataset and the training run")
    p.add_argument("--episodes", type=int, default=1200, help="demonstrations to record")
    p.add_argument(
        "--steps",
        type=int,
        default=17500,
        help=f"optimizer steps of the shipped run ({FULL_FRACTION * 100:.0f}%% full stage)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=LR, help="peak AdamW learning rate of both runs")
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (the shipped run used 1; a second barely speeds this model up and sums differently)",
    )
    p.add_argument("--jobs", type=int, default=2, help="evaluation processes (rows run in parallel)")
    p.add_argument("--ship-dir", default=str(SHIP_DIR), help="where the checkpoint is copied")
    args = p.parse_args(argv)
    work, timings = Path(args.work), {}
    from mole_vla_ros.data import record

    start = time.perf_counter()
    if not (work / "data" / "meta" / "info.json").is_file():
        rc = record.main(record_command(work, args.episodes))
        if rc != 0:
            print("recording failed", file=sys.stderr)
            return rc
    if not (work / "heldout" / "meta" / "info.json").is_file():  # expert demos at the evaluation seeds
        record.main(heldout_command(work))
    timings["record"] = time.perf_counter() - start
    start = time.perf_counter()
    for run, command in ((SHIPPED_RUN, train_command), (NOKD_RUN, nokd_command)):
        if not (work / run / "final" / "config.json").is_file():  # a finished run is not loaded again
            train_cli.main(command(work, args.steps, args.batch_size, args.threads, args.lr))
        timings[f"train {run}"] = time.perf_counter() - start
        start = time.perf_counter()
    rows = evaluate_rows(work, args.eval_episodes, args.jobs)
    timings["eval"] = time.perf_counter() - start
    ship = Path(args.ship_dir)
    shutil.rmtree(ship, ignore_errors=True)
    shutil.copytree(work / SHIPPED_RUN / "final", ship)
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
