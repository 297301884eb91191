"""Async vs sync chunk execution: task completion time in the MuJoCo sim, with the policy's quality taken out.

The question is what the execution strategy costs, so the "policy" is the sim's scripted expert
(so100_driver/sim/expert.py), never a learned model: asked for a chunk, it copies the world's MuJoCo state into a
planning copy of the sim and rolls itself forward chunk-size control steps there; the chunk is the targets it sent.
The chunk arrives `delay` seconds after the observation it was planned from (the model's latency) and is executed by
the same `ChunkQueue` the chunk_executor node uses (execution/chunk_queue.py), with the node's per-tick velocity
limit (`rate_limited`). Modes (each a QueueConfig; nothing is emulated outside the queue):
- sync: wait for each chunk, run it whole from its arrival (the baseline SmolVLA compares against);
- async_wall: the executor's former default: request below threshold 0.5 x chunk, drop the actions whose time since
  the observation has passed by the wall clock (stale_clock="wall"), blend;
- async: the executor's defaults (QueueConfig()): overtaken actions counted in executed steps (stale_clock="executed":
  the time the queue held still while the chunk was computed overtakes nothing, as in lerobot's async client);
- async_fixed / async_latency (whichever is not the default): the other request threshold, fixed 0.5 x chunk or
  just in time (measured chunk latency plus a margin, threshold_mode="latency").

Everything runs in one process on VIRTUAL time (the sim's clock; control ticks at the chunk rate, 30 Hz): no DDS,
no wall clock. That is deliberate: the result is the strategy's cost alone, repeatable to the bit, and independent of
how loaded this shared machine is (a DDS run needs the sim in real time, and the policy node has no way to serve the
expert). The DDS path itself is covered by test_bringup_e2e.py and bench/bench_latency.py.

The expert is a phase machine (above, descend, close, lift, ...); a new chunk continues from the expert's state at
the last action the arm actually executed. Caveat: this oracle's chunks are exact open-loop plans and it never
retries a failed grasp, so sync (which executes every planned action) loses nothing but waiting time, while async
cannot show its other gain (reacting to fresher observations) and any skipped action can cost the episode.

Sync waits `delay` for every chunk, an async queue (at best) only for the first, so async saves about
(chunks per task - 1) x delay / sync's task time: much where a task takes many chunks (short chunks, CELLS 16 and 25)
and the delay is under half the chunk's horizon (one request in flight can then hide it), little with long chunks.

Measured per cell (delay, chunk size) and mode: task completion time (sim seconds from reset to the success detector
firing), success rate, chunks used, and the share of control ticks spent holding (queue dry). Times are given over
successful episodes and with a failure counted as the time limit. Reference: the expert closed-loop at every tick.
Per cell also the saving of an ideal async executor: it never runs dry and skips no action, but even it waits `delay`
for its first chunk, so it takes about the expert's time plus the delay (an estimate, not a bound: the expert's settle
waits can overlap a hold, and skipping ahead in the plan can be faster while it does not cost the grasp).

    scripts/run_in_env.sh python bench/bench_async_sync.py [--episodes 10] [--quick]
writes bench/results/async_sync.json and bench/results/async_sync.png
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from mole_vla_ros.execution.chunk_queue import (
    ChunkQueue,
    ExecutionMode,
    QueueConfig,
    StaleClock,
    ThresholdMode,
    rate_limited,
)
from so100_driver.sim.env import SimConfig, SimEnv, mujoco
from so100_driver.sim.expert import CARROT_SPEED, ScriptedExpert

# ---- settings
FIRST_SEED = 1000
# Cells: (delay s observation -> chunk, actions per chunk at 30 fps).
# - 16 (0.53 s: the shipped default checkpoint's chunk_size) and 25 (0.83 s: e.g. SmolVLA run with n_action_steps
#   below its chunk): tasks take many chunks, and delays under half the horizon can be hidden by one request in flight;
# - 50 (1.67 s: SmolVLA's and our smolvlm2-500m preset's); 1.8 s is our 500M-shape CPU latency at 384 px;
# - 100: does a chunk longer than 2x the delay help?
CELLS = (
    *((delay, 16) for delay in (0.1, 0.2, 0.3)),
    *((delay, 25) for delay in (0.1, 0.2, 0.3, 0.5)),
    *((delay, 50) for delay in (0.0, 0.3, 1.0, 1.8)),
    *((delay, 100) for delay in (1.0, 1.8)),
)
QUICK_CELLS = ((0.2, 16), (0.3, 50), (1.0, 50))
TASKS = ("pick", "stack")
TIME_LIMIT = 40.0  # s of sim time per episode (the default 12 s would cut off sync at long delays)
THRESHOLD = 0.5  # chunk_executor default
OTHER_THRESHOLD_MODE = next(m for m in ThresholdMode if m is not QueueConfig().threshold_mode)
MODE_CONFIGS = {
    "sync": {"mode": ExecutionMode.SYNC},
    "async_wall": {"stale_clock": StaleClock.WALL, "threshold_mode": ThresholdMode.FIXED},  # the former default
    "async": {},  # the executor's defaults
    f"async_{OTHER_THRESHOLD_MODE}": {"threshold_mode": OTHER_THRESHOLD_MODE},
}
MODES = tuple(MODE_CONFIGS)
GOAL_SPEEDUP = 0.30  # issue 6: async at least 30% faster than sync
OUT = Path(__file__).parent / "results"
EXPERT_STATE = ("index", "_entered", "_settled", "_carrot", "_goals", "_yaw", "_q")


class ExpertPolicy:
    """Chunks from the scripted expert, planned on a copy of the world's state (an oracle observation)."""

    def __init__(self, world: SimEnv, speed: float = CARROT_SPEED) -> None:
        self.world = world
        self.planner = SimEnv(world.config)
        self.expert = ScriptedExpert(self.planner, speed)

    def reset(self) -> dict:
        self.planner.set_task(self.world.task)
        mujoco.mj_copyData(self.planner.data, self.planner.model, self.world.data)
        self.expert.reset()
        return self._state()

    def _state(self) -> dict:
        return copy.deepcopy({name: getattr(self.expert, name) for name in EXPERT_STATE})

    def plan(self, expert_state: dict, size: int) -> tuple[np.ndarray, list[dict]]:
        """`size` targets from the world's current state, continuing the expert from `expert_state`. Also the
        expert's state after each target (where the next chunk continues once that target was executed)."""
        mujoco.mj_copyData(self.planner.data, self.planner.model, self.world.data)
        self.planner.goal = self.world.goal.copy()
        for name, value in copy.deepcopy(expert_state).items():
            setattr(self.expert, name, value)
        actions, states = [], []
        for _ in range(size):
            action = self.expert.act()
            actions.append(action)
            states.append(self._state())
            self.planner.step(action)
        return np.array(actions), states

    def close(self) -> None:
        self.planner.close()


def queue_config(mode: str, delay: float) -> QueueConfig:
    base = QueueConfig(threshold=THRESHOLD, request_timeout=max(1.0, 2 * delay + 1.0))
    return dataclasses.replace(base, **MODE_CONFIGS[mode])


def run_chunked(world: SimEnv, policy: ExpertPolicy, seed: int, mode: str, delay: float, chunk_size: int) -> dict:
    """One episode executed chunk by chunk through ChunkQueue configured for `mode` (MODE_CONFIGS); the chunk lands
    `delay` s after its observation."""
    world.reset(seed, observe=False)
    expert_state = policy.reset()
    dt = world.dt
    queue = ChunkQueue(queue_config(mode, delay))
    queue.seed_hold(world.joint_positions())
    offsets = np.arange(1, chunk_size + 1) * dt
    max_velocity = world.max_velocity
    origin: dict[int, dict] = {}  # target time (us) -> the expert's state after that target
    pending: tuple[float, np.ndarray, list[dict]] | None = None  # (arrival, actions, states); stamp = arrival-delay
    last_sent = world.joint_positions()
    chunks = holding = ticks = 0
    thresholds = []
    while not world.done and not world.success():
        now = world.time
        if pending is not None and now >= pending[0] - 1e-9:
            arrival, actions, states = pending
            result = queue.push(arrival - delay, offsets, actions, now)
            assert result.accepted, result.reason
            # The queue decides when the chunk's actions are due (sync: from arrival; async: from its stamp, moved
            # on by the time the arm held still if stale actions count in executed steps).
            origin.update({round((result.start + off) * 1e6): s for off, s in zip(offsets, states, strict=True)})
            pending = None
            chunks += 1
        tick = queue.pop(now)
        if tick.target_time is not None:
            expert_state = origin.get(round(tick.target_time * 1e6), expert_state)
        if queue.needs_chunk(now) and pending is None:
            queue.mark_requested(now)
            thresholds.append(queue.threshold_fraction())
            actions, states = policy.plan(expert_state, chunk_size)
            pending = (now + delay, actions, states)
        holding += tick.holding
        ticks += 1
        (command,) = rate_limited(last_sent, np.array([now + dt]), tick.positions[None, :], now, max_velocity)
        last_sent = command
        world.step(command)
    return {
        "success": world.success(),
        "time_s": world.time,
        "chunks": chunks,
        "holding_share": holding / max(ticks, 1),
        # The request threshold (fraction of a chunk) at the requests; sync asks only when the queue is empty.
        "threshold_mean": None if mode == "sync" else float(np.mean(thresholds)),
        "task": world.task.kind,
    }


def run_expert(world: SimEnv, expert: ScriptedExpert, seed: int) -> dict:
    """The reference: the expert closed-loop at every tick, on the world itself."""
    world.reset(seed, observe=False)
    expert.reset()
    while not world.done and not world.success():
        world.step(expert.act())
    return {"success": world.success(), "time_s": world.time, "task": world.task.kind}


def summarise(episodes: list[dict]) -> dict:
    times = np.array([e["time_s"] if e["success"] else TIME_LIMIT for e in episodes])
    ok = [e["time_s"] for e in episodes if e["success"]]
    row = {
        "episodes": len(episodes),
        "success_rate": float(np.mean([e["success"] for e in episodes])),
        "time_s_mean": float(times.mean()),  # failures count as the time limit
        "time_s_mean_successful": float(np.mean(ok)) if ok else None,
        "per_episode": episodes,
    }
    if "chunks" in episodes[0]:
        row["chunks_mean"] = float(np.mean([e["chunks"] for e in episodes]))
        row["holding_share_mean"] = float(np.mean([e["holding_share"] for e in episodes]))
        thresholds = [e["threshold_mean"] for e in episodes if e["threshold_mean"] is not None]
        row["threshold_mean"] = float(np.mean(thresholds)) if thresholds else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10, help="seeded episodes per cell")
    parser.add_argument("--quick", action="store_true", help=f"3 episodes, cells (delay, chunk) {QUICK_CELLS} only")
    parser.add_argument(
        "--cells", type=parse_cells, help="DELAY:CHUNK,... instead of the default cells, e.g. 0.25:16,0.4:25"
    )
    parser.add_argument(
        "--expert-speed",
        type=float,
        default=CARROT_SPEED,
        help="the demonstrator's pace, m/s of the gripper's waypoint (the sim expert's own: %(default)s; a slower "
        "one makes longer tasks, as human teleoperation does); results go to async_sync_speed<S>.{json,png}",
    )
    args = parser.parse_args()
    episodes = 3 if args.quick else args.episodes
    cell_list = args.cells or (QUICK_CELLS if args.quick else CELLS)
    stem = "async_sync" if args.expert_speed == CARROT_SPEED else f"async_sync_speed{args.expert_speed:g}"
    seeds = range(FIRST_SEED, FIRST_SEED + episodes)
    load_start, wall_start = os.getloadavg(), time.monotonic()
    config = SimConfig(cameras=(), task_kinds=TASKS, time_limit=TIME_LIMIT)
    cells: dict[str, dict[str, dict]] = {}
    with SimEnv(config) as world:
        policy = ExpertPolicy(world, args.expert_speed)
        reference = summarise([run_expert(world, ScriptedExpert(world, args.expert_speed), seed) for seed in seeds])
        print(f"expert closed-loop: {reference['time_s_mean']:.2f} s, success {reference['success_rate']:.0%}")
        for delay, chunk_size in cell_list:
            name = f"{delay:g} s, H={chunk_size}"
            cell = cells[name] = {"delay_s": delay, "chunk_size": chunk_size}
            for mode in MODES:
                row = summarise([run_chunked(world, policy, seed, mode, delay, chunk_size) for seed in seeds])
                cell[mode] = row
                print(
                    f"{name} {mode:>11}: {row['time_s_mean']:.2f} s (successful: {row['time_s_mean_successful']}), "
                    f"success {row['success_rate']:.0%}, {row['chunks_mean']:.1f} chunks, "
                    f"holding {row['holding_share_mean']:.0%} of ticks, threshold {row['threshold_mean']}",
                    flush=True,
                )
            ideal = reference["time_s_mean"] + delay  # never dry, but the first chunk is waited for
            cell["ideal_async_time_saving"] = 1.0 - ideal / cell["sync"]["time_s_mean"]
            print(f"{name}: an ideal async executor would save ~{cell['ideal_async_time_saving']:.0%}", flush=True)
            for mode in MODES[1:]:
                # Two views: failures counted at the time limit, and successful episodes only.
                saving = 1.0 - cell[mode]["time_s_mean"] / cell["sync"]["time_s_mean"]
                ok_time, sync_ok = cell[mode]["time_s_mean_successful"], cell["sync"]["time_s_mean_successful"]
                cell[f"{mode}_time_saving"] = saving
                cell[f"{mode}_time_saving_successful"] = 1.0 - ok_time / sync_ok if ok_time and sync_ok else None
                cell[f"{mode}_goal_met"] = bool(saving >= GOAL_SPEEDUP)
                print(f"{name}: {mode} saves {saving:.0%} of sync's task time", flush=True)
        policy.close()
    record = {
        "what": "task completion time, scripted-expert chunks served with an artificial inference delay, executed by "
        "ChunkQueue (async vs sync), in-process on the sim's virtual clock (no DDS, no wall clock)",
        "command": "scripts/run_in_env.sh python bench/bench_async_sync.py"
        + (" --quick" if args.quick else f" --episodes {episodes}")
        + (f" --cells {','.join(f'{d:g}:{h}' for d, h in args.cells)}" if args.cells else "")
        + (f" --expert-speed {args.expert_speed:g}" if stem != "async_sync" else ""),
        "expert_speed_m_s": args.expert_speed,
        "seeds": f"{seeds.start}..{seeds.stop - 1}",
        "tasks": TASKS,
        "fps": config.control_hz,
        "threshold": THRESHOLD,
        "modes": {m: {k: str(v) for k, v in c.items()} or "QueueConfig defaults" for m, c in MODE_CONFIGS.items()},
        "time_limit_s": TIME_LIMIT,
        "goal_async_time_saving": GOAL_SPEEDUP,
        "loadavg_start": load_start,
        "loadavg_note": "virtual time: machine load changes only the wall time, never the numbers",
        "wall_s": round(time.monotonic() - wall_start, 1),
        "expert_closed_loop": reference,
        "cells": cells,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(record, OUT / f"{stem}.png")
    print(f"wrote {OUT / stem}.json and .png in {record['wall_s']} s")


def parse_cells(text: str) -> tuple[tuple[float, int], ...]:
    try:
        cells = tuple((float(d), int(h)) for d, h in (item.split(":") for item in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"cells must read DELAY:CHUNK,..., got {text!r}") from None
    if any(d < 0 or h < 1 for d, h in cells):
        raise argparse.ArgumentTypeError(f"delays must be >= 0 and chunks >= 1, got {text!r}")
    return cells


def plot(record: dict, path: Path) -> None:
    cells = record["cells"]
    labels = [f"{c['delay_s']:g} s\nH={c['chunk_size']}" for c in cells.values()]
    x, width = np.arange(len(labels)), 0.2
    fig, ax = plt.subplots(figsize=(max(12.0, 1.25 * len(labels)), 5.5))
    for i, mode in enumerate(MODES):
        values = [c[mode]["time_s_mean_successful"] or 0.0 for c in cells.values()]
        label = mode if mode != "async" else "async (executor default)"
        bars = ax.bar(x + (i - 1.5) * width, values, width, label=label)
        for bar, c in zip(bars, cells.values(), strict=True):
            # Vertical notes: with many cells, side-by-side notes of neighbouring bars would overlap.
            saving = c.get(f"{mode}_time_saving_successful")
            note = f"{c[mode]['success_rate']:.0%}" + (f" {round(-saving, 2) + 0.0:+.0%}" if saving is not None else "")
            ax.text(
                bar.get_x() + bar.get_width() / 2,
                bar.get_height() + 0.05,
                note,
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5},  # over the ideal's mark
            )
    expert = record["expert_closed_loop"]["time_s_mean"]
    ideal = [expert + c["delay_s"] for c in cells.values()]
    ax.hlines(ideal, x - 2 * width, x + 2 * width, color="k", lw=1.5, label="ideal async (expert + delay)")
    ax.axhline(expert, color="k", ls="--", lw=0.8, label="expert every tick")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_xlabel("inference delay (observation -> chunk), chunk size H at 30 Hz")
    ax.set_ylabel("mean task time of successful episodes, sim s")
    ax.set_ylim(0, 1.15 * max(max(c[m]["time_s_mean_successful"] or 0.0 for m in MODES) for c in cells.values()))
    speed = record.get("expert_speed_m_s", CARROT_SPEED)
    ax.set_title(
        f"Async vs sync, expert at {speed:g} m/s (labels: success rate, time vs sync over successful episodes)", pad=30
    )
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=6, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
