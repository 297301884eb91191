"""`mole-vla record`: scripted-expert demonstrations in the MuJoCo sim, written as a LeRobot v3.0 dataset.

Only successful episodes are kept; seeds run from --seed upward until --episodes successes (or --max-attempts).
Each frame holds the observation *before* the step and the action the expert sent from it (LeRobot's convention).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from mole_vla_ros.data.lerobot_dataset import LeRobotDatasetWriter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mole-vla record", description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=50, help="successful episodes to keep")
    parser.add_argument("--out", required=True, help="new dataset folder")
    parser.add_argument("--seed", type=int, default=0, help="first episode seed")
    parser.add_argument("--tasks", default="pick", help="comma-separated task kinds: pick,stack")
    parser.add_argument("--arm", default="so100", choices=("so100", "so101"))
    parser.add_argument("--fps", type=int, default=30, help="control and recording rate, Hz")
    parser.add_argument("--cameras", default="scene,wrist", help="comma-separated cameras")
    parser.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"), help="image size, px")
    parser.add_argument("--vcodec", default="libsvtav1", help="video encoder (libsvtav1 = LeRobot's AV1, libx264)")
    parser.add_argument(
        "--retry-share",
        type=float,
        default=0.0,
        help="share of episodes whose first grasp misses on purpose, then lifts, re-opens and grasps again "
        "(recovery demonstrations)",
    )
    parser.add_argument(
        "--hide-misses",
        action="store_true",
        help="with --retry-share: do not record the deliberate miss (aim, descend, close beside the cube); the "
        "episode starts as the empty jaws lift, so a policy learns to recover from a miss, not to miss",
    )
    parser.add_argument(
        "--action-noise",
        type=float,
        default=0.0,
        help="std (rad) of a slow random offset added to the executed arm targets; the recorded actions stay the "
        "expert's, which steer back (DART)",
    )
    parser.add_argument("--max-attempts", type=int, default=None, help="give up after this many episodes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Heavy imports (MuJoCo, the renderer) only once the arguments are known to be fine.
    from so100_driver.sim.env import SimConfig, SimEnv
    from so100_driver.sim.expert import ScriptedExpert, run_episode
    from so100_driver.sim.scene import CUBE_COLORS

    kinds = tuple(k.strip() for k in args.tasks.split(",") if k.strip())
    cameras = tuple(c.strip() for c in args.cameras.split(",") if c.strip())
    if args.episodes < 1:
        print("mole-vla record: --episodes must be >= 1", file=sys.stderr)
        return 2
    env = None
    try:
        config = SimConfig(
            arm=args.arm,
            control_hz=args.fps,
            cameras=cameras,
            height=args.size[0],
            width=args.size[1],
            task_kinds=kinds,
        )
        env = SimEnv(config)
        expert = ScriptedExpert(
            env, retry_share=args.retry_share, action_noise=args.action_noise, show_misses=not args.hide_misses
        )
    except ValueError as exc:
        if env is not None:  # a bad expert option: the renderer is already up
            env.close()
        print(f"mole-vla record: {exc}", file=sys.stderr)
        return 2
    max_attempts = args.max_attempts or 3 * args.episodes
    writer = LeRobotDatasetWriter(
        Path(args.out),
        fps=args.fps,
        cameras={c: tuple(args.size) for c in cameras},
        robot_type=args.arm,
        vcodec=args.vcodec,
        environment_state_dim=3 * len(CUBE_COLORS),  # SimEnv.environment_state: named cube first
    )
    attempts = failed = 0
    kept = tqdm(total=args.episodes, desc="episodes kept", unit="ep", disable=args.no_progress)
    frames = tqdm(desc="frames", unit="fr", position=1, disable=args.no_progress)

    def on_step(obs: dict, action: object) -> None:
        writer.add_frame(obs["state"], action, obs["images"], env.instruction, env.environment_state())  # type: ignore[arg-type]
        frames.update()

    try:
        while writer.num_episodes < args.episodes and attempts < max_attempts:
            seed = args.seed + attempts
            attempts += 1
            if run_episode(env, expert, seed, on_step=on_step):
                writer.save_episode()
                kept.update()
            else:
                writer.discard_episode()
                failed += 1
            kept.set_postfix(attempts=attempts, failed=failed)
    finally:
        kept.close()
        frames.close()
        env.close()
        if writer.num_episodes:
            writer.close()
    summary = {
        "out": str(args.out),
        "kept": writer.num_episodes,
        "attempts": attempts,
        "failed": failed,
        "success_rate": writer.num_episodes / max(attempts, 1),
    }
    print(json.dumps(summary))
    return 0 if writer.num_episodes == args.episodes else 1


if __name__ == "__main__":
    raise SystemExit(main())
