"""Where a training process runs: device, rank, seeding and the RNG state a checkpoint must carry.

The same `mole-vla train` command runs alone or under a launcher (torchrun / accelerate set RANK, WORLD_SIZE and
LOCAL_RANK): only rank 0 writes checkpoints, curves and the progress bar, and each rank takes its own shard of
every batch (data.batch_indices). The process group and gradient sync (DDP) are train/distributed.py's.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_runtime(device: str = "auto") -> Runtime:
    """Device from `device` ("auto" = CUDA when present, else CPU) and rank from the launcher's environment."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
        dev = torch.device("cuda", local) if device == "cuda" else torch.device(device)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise SystemExit(f"unknown --device {device!r}; use cpu, cuda, cuda:N or auto")
    return Runtime(dev, rank, world, local)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, object]:
    """Every RNG the training step draws from (noise, flow-matching time, Gumbel noise)."""
    state: dict[str, object] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, object]) -> None:
    torch.set_rng_state(state["torch"])  # type: ignore[arg-type]
    np.random.set_state(state["numpy"])  # type: ignore[arg-type]
    random.setstate(state["python"])  # type: ignore[arg-type]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])  # type: ignore[arg-type]
