"""What the training tests share (test_train.py, test_distributed.py): the tiny in-memory and on-disk datasets,
the run settings, and a loss measured with fixed noise so two models compare on equal terms.

pytest runs with --import-mode=importlib, so the tests put this folder on sys.path to import it; a script launched
by torchrun from this folder finds it as its own directory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mole_vla_ros.train.data import FrameDataset, synthetic_dataset
from mole_vla_ros.train.train import TrainConfig

BASE_SETTINGS = {
    "dataset": "synthetic",
    "steps": 12,
    "batch_size": 8,
    "warmup": 2,
    "lr": 1e-3,
    "log_every": 2,
    "save_every": 6,
    "device": "cpu",
    "full_fraction": 0.5,
}


def tiny_frames() -> FrameDataset:
    """96 learnable frames (4 episodes x 24) of 32 px images: synthetic_dataset's small setting."""
    return synthetic_dataset(episodes=4, frames=24, size=32)


def train_config(out: Path | str, **overrides) -> TrainConfig:
    return TrainConfig(**(BASE_SETTINGS | {"out": str(out)} | overrides))


def fixed_loss(policy, frames: FrameDataset, budget: float = 0.5) -> float:
    """Flow-matching loss on every third frame with fixed noise and times (the caller's RNG stream untouched)."""
    batch = frames.batch(list(range(0, len(frames), 3)), policy.config.chunk_size)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1234)
        return float(np.mean([policy(batch, budget=budget)[1]["flow"] for _ in range(4)]))


def write_lerobot_dataset(folder: Path, episodes: int = 2, frames: int = 12, size: int = 32) -> Path:
    """A LeRobot v3.0 dataset on disk (one 'scene' camera, one task per episode) in which the arm moves at a constant
    velocity set by the task: a chunk is predictable from the state and the instruction, so a few training steps
    visibly lower the loss."""
    from mole_vla_ros.data.lerobot_dataset import LeRobotDatasetWriter

    rng = np.random.default_rng(0)
    colours = ("red", "blue", "green")
    with LeRobotDatasetWriter(folder, fps=30, cameras={"scene": (size, size)}, vcodec="libx264") as writer:
        for episode in range(episodes):
            q = rng.uniform(-0.5, 0.5, 6)
            velocity = 0.02 * (1.0 if episode % 2 == 0 else -1.0)
            for _ in range(frames):
                image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                writer.add_frame(q, q + velocity, {"scene": image}, f"pick up the {colours[episode % 3]} cube")
                q = q + velocity
            writer.save_episode()
    return folder


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Torch on one thread for each test of a module that imports this (other suites share this CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
