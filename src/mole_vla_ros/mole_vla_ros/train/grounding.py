"""Does the policy read the instruction? A probe at the first frame of seeded sim scenes, no rollout needed.

`python -m mole_vla_ros.train.grounding <checkpoint> [--scenes 30]`: for each scene and each cube colour, the
instruction `pick up the <colour> cube` goes in with the first observation (arm at its start pose, every cube on the
table), and the policy's auxiliary heads say where it is headed:
- the environment-state head (config.w_env_state) predicts the named cube's centre: the probe counts the scenes where
  the cube nearest that prediction is the named one;
- the future-state head (config.w_future) predicts the arm's state 1.5 s ahead: the probe counts the scenes where its
  shoulder pan is nearest the pan that aims at the named cube.
Chance is 1 in 3 (three cubes). A policy that ignores the colour word points at the same cube whatever it is told.
This is the decision a pick starts with; closed-loop success (`mole-vla eval`) also needs the grasp to work.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from mole_vla_ros.policy import MoLePolicy
from mole_vla_ros.policy.skip import run_layers
from mole_vla_ros.train.evaluate import recorded_cameras
from mole_vla_ros.train.rollout import observation_batch


@dataclass
class GroundingResult:
    probes: int = 0
    env_state_hits: int | None = None  # None: the policy has no environment-state head
    future_hits: int | None = None  # None: no future-state head
    env_state_error_m: list[float] = field(default_factory=list)  # named cube centre, xy distance
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((3, 3), int))  # named x pointed (env head)

    def as_dict(self) -> dict:
        def share(hits: int | None) -> float | None:
            return None if hits is None else hits / max(self.probes, 1)

        return {
            "probes": self.probes,
            "env_state_hit_rate": share(self.env_state_hits),
            "future_hit_rate": share(self.future_hits),
            "env_state_error_cm": float(np.mean(self.env_state_error_m) * 100) if self.env_state_error_m else None,
            "confusion": self.confusion.tolist(),
        }


@torch.no_grad()
def cognition_heads(policy: MoLePolicy, batch: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(environment state, future state) the full-depth policy predicts from its cognition token, in data units."""
    prefix = policy._embed_prefix(batch, {})
    cog = prefix.embeds.shape[1] - 1
    hidden = run_layers(policy.backbone, prefix.embeds, prefix.rope, prefix.mask, None, policy.config.skip_mode, cog)
    token = hidden.hidden[:, cog]
    norm = policy.normalizer
    env = future = None
    if policy.env_state_head is not None:
        env = policy.env_state_head(token) * norm.env_state_std + norm.env_state_mean
    if policy.future_head is not None:
        future = policy.future_head(token)[:, : policy.config.state_dim] * norm.state_std + norm.state_mean
    return env, future


def probe(
    policy: MoLePolicy, cameras: list[str], size: tuple[int, int], scenes: int = 30, first_seed: int = 100_000
) -> GroundingResult:
    """Probe `scenes` seeded scenes x every cube colour (see the module docstring), rendering `cameras` (the
    policy's, in its input order) at `size` (H, W)."""
    from so100_driver.sim.env import SimEnv
    from so100_driver.sim.expert import ScriptedExpert
    from so100_driver.sim.scene import CUBE_COLORS
    from so100_driver.sim.tasks import Task

    colours = list(CUBE_COLORS)
    result = GroundingResult(
        env_state_hits=0 if policy.env_state_head is not None else None,
        future_hits=0 if policy.future_head is not None else None,
    )
    with SimEnv(cameras=tuple(cameras), width=size[1], height=size[0]) as env:
        aim = ScriptedExpert(env)
        for seed in range(first_seed, first_seed + scenes):
            obs = env.reset(seed, Task("pick", colours[0]))
            cubes = env.cube_positions()
            start = env.joint_positions()
            pan = {}
            for colour in colours:  # the pan that puts the jaws over each cube
                above = cubes[colour] + np.array([0.0, 0.0, 0.07])
                pan[colour] = aim.solve_ik(above, math.atan2(above[1], above[0]), start)[0]
            for named_index, named in enumerate(colours):
                batch = observation_batch(obs, cameras, Task("pick", named).instruction, torch.device("cpu"))
                env_state, future = cognition_heads(policy, batch)
                result.probes += 1
                if env_state is not None:
                    xy = env_state[0, :2].numpy()
                    pointed = min(colours, key=lambda c: float(np.hypot(*(cubes[c][:2] - xy))))
                    result.env_state_hits += pointed == named
                    result.env_state_error_m.append(float(np.hypot(*(cubes[named][:2] - xy))))
                    result.confusion[named_index, colours.index(pointed)] += 1
                if future is not None:
                    headed = min(colours, key=lambda c: abs(pan[c] - float(future[0, 0])))
                    result.future_hits += headed == named
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mole_vla_ros.train.grounding", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="policy folder or hub id")
    parser.add_argument("--scenes", type=int, default=30, help="seeded scenes (each probed with every colour)")
    parser.add_argument("--seed", type=int, default=100_000, help="first scene seed")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    policy = MoLePolicy.from_pretrained(args.checkpoint)
    cameras, size = recorded_cameras(args.checkpoint)
    result = probe(policy, cameras, size, args.scenes, args.seed)
    print(json.dumps({"checkpoint": args.checkpoint, **result.as_dict()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
