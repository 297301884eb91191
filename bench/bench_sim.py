"""Sim speed on this CPU: physics steps/s, camera fps at 224x224 and 640x480, real-time factor with the camera on,
and the scripted expert's success over seeded episodes. Writes bench/results/sim.json and sim.png.

    scripts/run_in_env.sh python bench/bench_sim.py [--expert-episodes 100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from so100_driver.sim.env import SimConfig, SimEnv, mujoco
from so100_driver.sim.expert import ScriptedExpert, run_episode

# -- settings ---------------------------------------------------------------------------------------------------
SEED = 0
WARMUP_STEPS = 30
TIMED_SECONDS = 3.0  # per measurement
RESOLUTIONS = ((224, 224), (480, 640))  # (H, W)
RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, seconds: float = TIMED_SECONDS) -> tuple[int, float]:
    """Call fn() repeatedly for about `seconds`; returns (calls, elapsed)."""
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        calls += 1
    return calls, elapsed


def random_targets(env: SimEnv, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(env.lower, env.upper) * 0.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expert-episodes", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    out: dict = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "mujoco": mujoco.__version__,
        "renderer": os.environ["MUJOCO_GL"],
    }

    with SimEnv(SimConfig(cameras=())) as env:
        env.reset(SEED)
        env.set_goal(random_targets(env, rng))
        for _ in range(WARMUP_STEPS):
            env.advance(1)
        calls, elapsed = timed(lambda: env.advance(env.substeps))
        out["physics_steps_per_s"] = calls * env.substeps / elapsed
        out["control_steps_per_s_no_camera"] = calls / elapsed
        out["real_time_factor_no_camera"] = calls * env.dt / elapsed
        out["physics_timestep_s"] = env.model.opt.timestep
        out["control_hz"] = env.config.control_hz

    for height, width in RESOLUTIONS:
        key = f"{width}x{height}"
        with SimEnv(SimConfig(cameras=("scene",), width=width, height=height)) as env:
            env.reset(SEED)
            for _ in range(5):
                env.render("scene")
            calls, elapsed = timed(lambda env=env: env.render("scene"))
            out[f"camera_fps_{key}"] = calls / elapsed
            # Control at 30 Hz with one scene frame per step: what recording and evaluation do.
            env.set_goal(random_targets(env, rng))
            calls, elapsed = timed(lambda env=env: env.step(random_targets(env, rng)))
            out[f"real_time_factor_camera_{key}"] = calls * env.dt / elapsed
            out[f"control_steps_per_s_camera_{key}"] = calls / elapsed

    if args.expert_episodes:
        with SimEnv(SimConfig(cameras=(), task_kinds=("pick", "stack"))) as env:
            expert = ScriptedExpert(env)
            results: dict[str, list[bool]] = {}
            start = time.perf_counter()
            for seed in range(1000, 1000 + args.expert_episodes):
                ok = run_episode(env, expert, seed)
                results.setdefault(env.task.kind, []).append(ok)
            out["expert"] = {
                "episodes": args.expert_episodes,
                "seeds": f"1000..{999 + args.expert_episodes}",
                "success_rate": float(np.mean([v for vs in results.values() for v in vs])),
                "per_task": {k: {"episodes": len(v), "success_rate": float(np.mean(v))} for k, v in results.items()},
                "wall_s": time.perf_counter() - start,
            }

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sim.json").write_text(json.dumps(out, indent=2))
    for key, value in out.items():
        if isinstance(value, float):
            print(f"{key:40s} {value:10.2f}")
    if "expert" in out:
        print(f"{'expert success':40s} {out['expert']['success_rate']:10.2%} over {args.expert_episodes} episodes")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    keys = [f"camera_fps_{w}x{h}" for h, w in RESOLUTIONS]
    axes[0].bar([k.removeprefix("camera_fps_") for k in keys], [out[k] for k in keys], color="tab:blue")
    axes[0].set_ylabel("frames / s")
    axes[0].set_title("MuJoCo offscreen camera (EGL, CPU)")
    rtf = ["real_time_factor_no_camera"] + [f"real_time_factor_camera_{w}x{h}" for h, w in RESOLUTIONS]
    axes[1].bar(["no camera"] + [k.rsplit("_", 1)[-1] for k in rtf[1:]], [out[k] for k in rtf], color="tab:orange")
    axes[1].axhline(1.0, color="k", lw=0.8, ls="--")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("sim s / wall s")
    axes[1].set_title("real-time factor at 30 Hz control")
    fig.tight_layout()
    fig.savefig(RESULTS / "sim.png", dpi=100)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
