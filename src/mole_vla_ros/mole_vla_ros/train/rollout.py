"""Closed-loop episodes in the MuJoCo sim through the code the ROS nodes run, without DDS.

Per control tick (sim time): when the ChunkQueue asks for a chunk, the policy predicts one from the current
observation (`predict_action_chunk`, the policy node's call), overshoots of the joint limits are clamped as the
policy node clamps them (`clamp_near_limits`), the chunk is pushed with the observation's stamp and offsets
(i+1)/fps (the ActionChunk convention), and the tick's target is popped from the queue, exactly as the chunk
executor node does; a chunk the queue refuses is counted and the arm keeps to what it had, as on the real path.
Inference takes no sim time here (the sim waits for the model), so the measured wall-clock latency is reported
beside success rather than folded into it.

Layer modes (what runs in the VLM, always k = budget x L layers except `full`):
- mole:   the trained STAR router picks k layers per chunk;
- full:   every kept layer (budget 1.0);
- static: the first k layers, for every input (SmolVLA's choice of truncation, applied at the same k);
- random: k layers drawn uniformly per chunk (seeded).
`static` and `random` pass a forced layer mask to `predict_action_chunk` (the router is not run), so the rest of
the path (real skipping, the expert's handling of skipped layers) is the policy's own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mole_vla_ros.execution.chunk_queue import POLICY_CLAMP_MARGIN, ChunkQueue, QueueConfig, clamp_near_limits
from mole_vla_ros.policy import MoLePolicy
from mole_vla_ros.policy.flops import chunk_flops
from so100_driver.joints import joints_for

MODES = ("mole", "full", "static", "random")


class LayerSelection:
    """How one evaluation row picks layers: `kwargs(batch_size)` gives `predict_action_chunk` either the budget
    (mole, full: the router decides) or a forced `active_mask` (static: the first k layers; random: k layers drawn
    per call from a generator seeded once per row, so rows are reproducible)."""

    def __init__(self, policy: MoLePolicy, mode: str, budget: float, seed: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")
        self.mode = mode
        self.budget = 1.0 if mode == "full" else float(budget)
        self.num_layers = policy.num_layers
        self.k = policy.config.num_active(self.budget)
        self.generator = torch.Generator().manual_seed(seed)

    def kwargs(self, batch_size: int) -> dict:
        if self.mode in ("mole", "full"):
            return {"budget": self.budget}
        mask = torch.zeros(batch_size, self.num_layers, dtype=torch.bool)
        if self.mode == "static":
            mask[:, : self.k] = True
        else:
            ranks = torch.rand(batch_size, self.num_layers, generator=self.generator)
            mask.scatter_(-1, ranks.topk(self.k, dim=-1).indices, True)
        return {"active_mask": mask}


def layer_mode(policy: MoLePolicy, mode: str, budget: float, seed: int = 0) -> LayerSelection:
    """The layer selection of one evaluation row (see `LayerSelection`)."""
    return LayerSelection(policy, mode, budget, seed)


def observation_batch(obs: dict, cameras: Sequence[str], instruction: str, device: torch.device) -> dict:
    """A sim observation (HxWx3 uint8 images, (6,) state) as the policy's batch of one."""
    missing = [c for c in cameras if c not in obs["images"]]
    if missing:
        raise ValueError(f"the observation lacks cameras {missing}; it has {sorted(obs['images'])}")
    images = [torch.from_numpy(obs["images"][c]).permute(2, 0, 1)[None].float().div(255.0).to(device) for c in cameras]
    state = torch.as_tensor(np.asarray(obs["state"]), dtype=torch.float32)[None].to(device)
    return {"images": images, "instruction": [instruction], "state": state}


@dataclass
class EpisodeResult:
    seed: int
    instruction: str
    success: bool
    task_time: float | None  # sim seconds to success (None on failure)
    chunks: int
    rejected_chunks: int = 0  # refused by the chunk queue (the arm kept its previous plan)
    active_layers: list[int] = field(default_factory=list)  # per chunk
    latency_s: list[float] = field(default_factory=list)  # per chunk, wall clock
    flops_fraction: float = 1.0


def run_episode(
    policy: MoLePolicy,
    env: object,
    seed: int,
    cameras: Sequence[str],
    selection: LayerSelection,
    task: object = None,
    queue_config: QueueConfig | None = None,
    clamp_margin: float = POLICY_CLAMP_MARGIN,
) -> EpisodeResult:
    """One seeded episode until success or the env's time limit. `env` is a so100_driver SimEnv."""
    device = next(policy.parameters()).device
    obs = env.reset(seed, task)  # type: ignore[attr-defined]
    instruction = env.instruction  # type: ignore[attr-defined]
    policy.reset()
    torch.manual_seed(seed)  # the denoising noise too, so an episode is reproducible from its seed
    queue = ChunkQueue(queue_config or QueueConfig(arm=getattr(env.config, "arm", "so100")))  # type: ignore[attr-defined]
    joints = joints_for(queue.config.arm)
    queue.seed_hold(np.asarray(obs["state"]))
    dt = env.dt  # type: ignore[attr-defined]
    offsets = (np.arange(policy.config.chunk_size) + 1) * dt
    result = EpisodeResult(seed, instruction, False, None, 0)
    while not env.done:  # type: ignore[attr-defined]
        now = env.time  # type: ignore[attr-defined]
        if queue.needs_chunk(now):
            pred = policy.predict_action_chunk(
                observation_batch(obs, cameras, instruction, device), **selection.kwargs(1)
            )
            positions, _ = clamp_near_limits(pred.actions[0].double().cpu().numpy(), joints, clamp_margin)
            result.rejected_chunks += not queue.push(now, offsets, positions, now=now).accepted
            result.chunks += 1
            result.active_layers.append(int(pred.active_mask[0].sum()))
            result.latency_s.append(pred.timings["total"])
            result.flops_fraction = pred.flops_fraction
        # The tick's target is the action due at the end of this control period (offset (i+1)/fps).
        tick = queue.pop(now + 0.5 * dt)
        obs = env.step(tick.positions)  # type: ignore[attr-defined]
        if env.success():  # type: ignore[attr-defined]
            result.success, result.task_time = True, env.time  # type: ignore[attr-defined]
            break
    return result


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 1) with no trials."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(
    label: str, mode: str, budget: float, policy: MoLePolicy, episodes: list[EpisodeResult], num_cameras: int
) -> dict:
    """One table row: success with its Wilson 95% interval, task time, active layers, latency, analytic FLOPs."""
    n, wins = len(episodes), sum(e.success for e in episodes)
    low, high = wilson_interval(wins, n)
    times = [e.task_time for e in episodes if e.task_time is not None]
    active = [a for e in episodes for a in e.active_layers]
    latency = np.array([t for e in episodes for t in e.latency_s]) * 1e3
    effective = 1.0 if mode == "full" else budget
    flops = chunk_flops(policy.config, effective, num_cameras=num_cameras)["total"]
    return {
        "label": label,
        "mode": mode,
        "budget": effective,
        "episodes": n,
        "successes": wins,
        "success_rate": wins / n if n else 0.0,
        "ci_low": low,
        "ci_high": high,
        "mean_task_time_s": float(np.mean(times)) if times else None,
        "mean_active_layers": float(np.mean(active)) if active else None,
        "rejected_chunks": sum(e.rejected_chunks for e in episodes),
        "num_layers": policy.num_layers,
        "latency_ms_mean": float(latency.mean()) if latency.size else None,
        "latency_ms_p95": float(np.percentile(latency, 95)) if latency.size else None,
        "gflops_per_chunk": flops / 1e9,
    }


@torch.no_grad()
def heldout_action_error(
    policy: MoLePolicy, data: object, selection: LayerSelection, stride: int = 5, seed: int = 0
) -> float:
    """Mean squared error (rad^2) of predicted chunks against held-out expert chunks, over every `stride`-th frame
    (padding excluded). Open-loop, so it separates layer modes even where closed-loop success is too rare to."""
    torch.manual_seed(seed)
    errors = []
    frames = list(range(0, len(data), stride))  # type: ignore[arg-type]
    for start in range(0, len(frames), 64):
        batch = data.batch(frames[start : start + 64], policy.config.chunk_size)  # type: ignore[attr-defined]
        pred = policy.predict_action_chunk(batch, **selection.kwargs(len(batch["state"]))).actions
        keep = (~batch["action_is_pad"]).unsqueeze(-1).float()
        errors.append((((pred - batch["action"]) ** 2) * keep).sum() / (keep.sum() * pred.shape[-1]))
    return float(torch.stack(errors).mean())
