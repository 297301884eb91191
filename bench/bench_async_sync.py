"""Async vs sync chunk execution: task completion time in the MuJoCo sim, with the policy's quality taken out.

The question is what the execution strategy costs, so the "policy" is the sim's scripted expert
(so100_driver/sim/expert.py) and never a learned model: asked for a chunk, it copies the world's MuJoCo state into a
planning copy of the sim and rolls itself forward CHUNK_SIZE control steps there; the chunk is the targets it sent.
The chunk arrives INFERENCE_DELAY seconds after the observation it was planned from (the model's latency), and is
executed by the same `ChunkQueue` the chunk_executor node uses (execution/chunk_queue.py: async = request at
threshold x chunk, drop stale actions, blend overlaps; sync = wait for each chunk, run it whole from arrival), with the
node's per-tick velocity limit (`rate_limited`).

Everything runs in one process on VIRTUAL time (the sim's clock; control ticks at the chunk rate, 30 Hz): no DDS,
no wall clock. That is deliberate: the result is the strategy's cost alone, repeatable to the bit, and independent of
how loaded this shared machine is (a DDS run needs the sim in real time, and the policy node has no way to serve the
expert). The DDS path itself is covered by test_bringup_e2e.py and bench/bench_latency.py.

The expert is a phase machine (above, descend, close, lift, ...); a new chunk continues from the expert's state at
the last action the arm actually executed, so a chunk planned from an observation the arm has moved on from is not
restarted from the first phase.

Measured per (delay, mode): task completion time (sim seconds from reset to the success detector firing; an
episode that fails counts as the time limit and is reported separately), success rate, chunks used, and the share
of control ticks spent holding (queue dry: the arm waits for the model). Reference: the expert closed-loop at every
tick (no chunking, no delay).

    scripts/run_in_env.sh python bench/bench_async_sync.py [--episodes 10] [--quick]
writes bench/results/async_sync.json and bench/results/async_sync.png
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from mole_vla_ros.execution.chunk_queue import ChunkQueue, ExecutionMode, QueueConfig, rate_limited
from so100_driver.sim.env import SimConfig, SimEnv, mujoco
from so100_driver.sim.expert import ScriptedExpert

# ---- settings
FIRST_SEED = 1000
CHUNK_SIZE = 50  # actions per chunk: SmolVLA's and our smolvlm2-500m preset's (1.67 s at 30 fps)
DELAYS = (0.0, 0.3, 1.0, 1.8)  # s observation -> chunk; 1.8 s is our 500M-shape CPU latency at 384 px
QUICK_DELAYS = (0.3, 1.0)
TASKS = ("pick", "stack")
TIME_LIMIT = 40.0  # s of sim time per episode (the default 12 s would cut off sync at long delays)
THRESHOLD = 0.5  # chunk_executor default
TUNED_MARGIN = 3  # actions: async_tuned requests when what is left still covers the delay plus this many ticks
MODES = ("sync", "async", "async_tuned")
GOAL_SPEEDUP = 0.30  # issue 6: async at least 30% faster than sync
OUT = Path(__file__).parent / "results"
EXPERT_STATE = ("index", "_entered", "_settled", "_carrot", "_goals", "_yaw", "_q")


class ExpertPolicy:
    """Chunks from the scripted expert, planned on a copy of the world's state (an oracle observation)."""

    def __init__(self, world: SimEnv) -> None:
        self.world = world
        self.planner = SimEnv(world.config)
        self.expert = ScriptedExpert(self.planner)

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


def tuned_threshold(delay: float, fps: float) -> float:
    """The smallest threshold whose remaining actions outlast the delay (capped at 1: a chunk shorter than the
    delay cannot be hidden by any threshold)."""
    return min(1.0, (math.ceil(delay * fps) + TUNED_MARGIN) / CHUNK_SIZE)


def run_chunked(world: SimEnv, policy: ExpertPolicy, seed: int, mode: str, delay: float) -> dict:
    """One episode executed chunk by chunk through ChunkQueue; the chunk lands `delay` s after its observation.
    `mode`: sync, async (the executor's default threshold) or async_tuned (threshold from the delay)."""
    world.reset(seed, observe=False)
    expert_state = policy.reset()
    dt = world.dt
    threshold = tuned_threshold(delay, world.config.control_hz) if mode == "async_tuned" else THRESHOLD
    mode = ExecutionMode.SYNC if mode == "sync" else ExecutionMode.ASYNC
    queue = ChunkQueue(QueueConfig(mode=mode, threshold=threshold, request_timeout=max(1.0, 2 * delay + 1.0)))
    queue.seed_hold(world.joint_positions())
    offsets = np.arange(1, CHUNK_SIZE + 1) * dt
    max_velocity = world.max_velocity
    origin: dict[int, dict] = {}  # target time (us) -> the expert's state after that target
    pending: tuple[float, np.ndarray, list[dict]] | None = None  # (arrival, actions, states); stamp = arrival-delay
    last_sent = world.joint_positions()
    chunks = holding = ticks = 0
    while not world.done and not world.success():
        now = world.time
        if pending is not None and now >= pending[0] - 1e-9:
            arrival, actions, states = pending
            stamp = arrival - delay
            result = queue.push(stamp, offsets, actions, now)
            assert result.accepted, result.reason
            base = now if mode == ExecutionMode.SYNC else stamp  # sync runs the chunk from its arrival
            origin.update({round((base + off) * 1e6): s for off, s in zip(offsets, states, strict=True)})
            pending = None
            chunks += 1
        tick = queue.pop(now)
        if tick.target_time is not None:
            expert_state = origin.get(round(tick.target_time * 1e6), expert_state)
        if queue.needs_chunk(now) and pending is None:
            queue.mark_requested(now)
            actions, states = policy.plan(expert_state, CHUNK_SIZE)
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
        "threshold": threshold,
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
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10, help="seeded episodes per cell")
    parser.add_argument("--quick", action="store_true", help=f"3 episodes, delays {QUICK_DELAYS} only")
    args = parser.parse_args()
    episodes = 3 if args.quick else args.episodes
    delays = QUICK_DELAYS if args.quick else DELAYS
    seeds = range(FIRST_SEED, FIRST_SEED + episodes)
    load_start, wall_start = os.getloadavg(), time.monotonic()
    config = SimConfig(cameras=(), task_kinds=TASKS, time_limit=TIME_LIMIT)
    cells: dict[str, dict[str, dict]] = {}
    with SimEnv(config) as world:
        policy = ExpertPolicy(world)
        reference = summarise([run_expert(world, ScriptedExpert(world), seed) for seed in seeds])
        print(f"expert closed-loop: {reference['time_s_mean']:.2f} s, success {reference['success_rate']:.0%}")
        for delay in delays:
            for mode in MODES:
                row = summarise([run_chunked(world, policy, seed, mode, delay) for seed in seeds])
                cells.setdefault(f"{delay:.1f}", {})[mode] = row
                print(
                    f"delay {delay:.1f} s {mode:>11}: {row['time_s_mean']:.2f} s, success {row['success_rate']:.0%}, "
                    f"{row['chunks_mean']:.1f} chunks, holding {row['holding_share_mean']:.0%} of ticks",
                    flush=True,
                )
            cell = cells[f"{delay:.1f}"]
            cell["async_tuned"]["threshold"] = tuned_threshold(delay, config.control_hz)
            for mode in MODES[1:]:
                saving = 1.0 - cell[mode]["time_s_mean"] / cell["sync"]["time_s_mean"]
                cell[f"{mode}_time_saving"] = saving
                cell[f"{mode}_goal_met"] = bool(saving >= GOAL_SPEEDUP)
                print(f"delay {delay:.1f} s: {mode} saves {saving:.0%} of sync's task time", flush=True)
        policy.close()
    record = {
        "what": "task completion time, scripted-expert chunks served with an artificial inference delay, executed by "
        "ChunkQueue (async vs sync), in-process on the sim's virtual clock (no DDS, no wall clock)",
        "command": "scripts/run_in_env.sh python bench/bench_async_sync.py"
        + (" --quick" if args.quick else f" --episodes {episodes}"),
        "seeds": f"{seeds.start}..{seeds.stop - 1}",
        "tasks": TASKS,
        "chunk_size": CHUNK_SIZE,
        "fps": config.control_hz,
        "threshold": THRESHOLD,
        "time_limit_s": TIME_LIMIT,
        "goal_async_time_saving": GOAL_SPEEDUP,
        "loadavg_start": load_start,
        "loadavg_note": "virtual time: machine load changes only the wall time, never the numbers",
        "wall_s": round(time.monotonic() - wall_start, 1),
        "expert_closed_loop": reference,
        "by_delay_s": cells,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "async_sync.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(record)
    print(f"wrote {OUT / 'async_sync.json'} and {OUT / 'async_sync.png'} in {record['wall_s']} s")


def plot(record: dict) -> None:
    cells = record["by_delay_s"]
    labels = list(cells)
    x, width = np.arange(len(labels)), 0.27
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, mode in enumerate(MODES):
        values = [cells[d][mode]["time_s_mean"] for d in labels]
        bars = ax.bar(x + (i - 1) * width, values, width, label=mode if mode != "async" else f"async (th {THRESHOLD})")
        for bar, d in zip(bars, labels, strict=True):
            rate = cells[d][mode]["success_rate"]
            note = f"{rate:.0%}" if mode == "sync" else f"{rate:.0%}\n{-cells[d][f'{mode}_time_saving']:+.0%}"
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), note, ha="center", va="bottom", fontsize=7)
    ax.axhline(record["expert_closed_loop"]["time_s_mean"], color="k", ls="--", lw=0.8, label="expert every tick")
    ax.set_xticks(x, [f"{d} s" for d in labels])
    ax.set_xlabel("inference delay (observation -> chunk)")
    ax.set_ylabel("mean task time, sim s (failure = time limit)")
    ax.set_title(f"Async vs sync, chunk {record['chunk_size']} @ {record['fps']:.0f} Hz (success; time vs sync)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "async_sync.png", dpi=120)


if __name__ == "__main__":
    main()
