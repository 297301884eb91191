"""Builders for tests and benchmarks of the policy: tiny config, synthetic batches, fixed noise."""

from __future__ import annotations

import torch

from .config import MoLeConfig
from .policy import MoLePolicy


def tiny_policy(seed: int = 0, **overrides: object) -> MoLePolicy:
    torch.manual_seed(seed)
    return MoLePolicy(MoLeConfig.preset("tiny", **overrides))


def make_batch(policy: MoLePolicy, batch: int = 2, seed: int = 1, cameras: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    cfg = policy.config
    words = ["pick up the red cube", "push the block left", "open gripper", "stack the cubes"]
    return {
        "images": [torch.rand(batch, 3, 48, 64, generator=gen) for _ in range(cameras)],
        "instruction": [words[i % len(words)] for i in range(batch)],
        "state": torch.randn(batch, cfg.state_dim, generator=gen),
        "action": torch.randn(batch, cfg.chunk_size, cfg.action_dim, generator=gen),
        "action_is_pad": torch.zeros(batch, cfg.chunk_size, dtype=torch.bool),
    }


def fixed_noise(policy: MoLePolicy, batch: int, seed: int = 7) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, policy.config.chunk_size, policy.config.max_action_dim, generator=gen)


def force_router(policy: MoLePolicy, probs: torch.Tensor) -> None:
    """Make the router return fixed probabilities (to steer which layers run per sample)."""
    policy.router.forward = lambda *args, **kwargs: probs.clone()
