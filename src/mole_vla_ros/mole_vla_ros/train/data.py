"""Frames in memory, action chunks cut on the fly, and a resumable, rank-sharded batch order.

Training reads a dataset once into uint8 image tensors already resized to the model's input size (decoding video
every step would cost more than the tiny model's forward pass), then cuts each frame's H-step action chunk from the
per-frame actions of its episode, padding past the episode end (LeRobot's `action_is_pad`).

The batch order is a pure function of (seed, step, rank): a resumed run draws exactly the batches an uninterrupted
run would, with no sampler state to save, and each rank of a distributed run takes its own shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class FrameDataset:
    """All frames of a dataset. images: camera -> (N, 3, S, S) uint8; state, action: (N, J) float32 radians;
    episode_index, task_index: (N,) int64; tasks: task texts by index; fps: frames per second;
    source_hw: the recorded image size (H, W), which evaluation renders at; environment_state: (N, E) float32, the
    dataset's `observation.environment_state` when it has one (the sim's cube centres), else None."""

    images: dict[str, torch.Tensor]
    state: torch.Tensor
    action: torch.Tensor
    episode_index: torch.Tensor
    task_index: torch.Tensor
    tasks: list[str]
    fps: float
    source_hw: tuple[int, int] | None = None
    environment_state: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.state.shape[0]
        if n == 0:
            raise ValueError("the dataset has no frames")
        if not self.images:
            raise ValueError("the dataset has no camera images")
        sizes = {k: v.shape[0] for k, v in self.images.items()}
        if self.action.shape[0] != n or self.episode_index.shape != (n,) or self.task_index.shape != (n,):
            raise ValueError("state, action, episode_index and task_index disagree on the number of frames")
        if any(s != n for s in sizes.values()):
            raise ValueError(f"camera frame counts {sizes} differ from the {n} state frames")
        if int(self.task_index.max()) >= len(self.tasks) or int(self.task_index.min()) < 0:
            raise ValueError(f"task_index outside the {len(self.tasks)} known tasks")
        if not (torch.isfinite(self.state).all() and torch.isfinite(self.action).all()):
            raise ValueError("the dataset has non-finite state or action values")
        env = self.environment_state
        if env is not None and (env.dim() != 2 or env.shape[0] != n or not torch.isfinite(env).all()):
            raise ValueError(f"environment_state must be ({n}, E) finite values, got {tuple(env.shape)}")
        if torch.any(torch.diff(self.episode_index) < 0):
            raise ValueError("frames must be grouped by episode, in order")
        # First and last frame of each frame's episode: chunks stop at the end, oversampling counts from the start.
        starts, ends = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
        change = torch.nonzero(torch.diff(self.episode_index)).flatten()
        starts_next = torch.cat([change + 1, torch.tensor([n])])
        prev = 0
        for end in starts_next.tolist():
            starts[prev:end], ends[prev:end] = prev, end - 1
            prev = end
        self._episode_start, self._episode_end = starts, ends

    def __len__(self) -> int:
        return self.state.shape[0]

    @property
    def cameras(self) -> list[str]:
        return sorted(self.images)

    @property
    def num_episodes(self) -> int:
        return int(torch.unique(self.episode_index).numel())

    def stats(self) -> dict[str, dict[str, list[float]]]:
        """LeRobot-style mean/std of state and action, std floored so a constant joint cannot divide by zero."""
        out = {}
        keyed = [("observation.state", self.state), ("action", self.action)]
        if self.environment_state is not None:
            keyed.append(("observation.environment_state", self.environment_state))
        for key, values in keyed:
            std = values.std(0, unbiased=False).clamp_min(1e-3)
            out[key] = {
                "mean": values.mean(0).tolist(),
                "std": std.tolist(),
                "min": values.min(0).values.tolist(),
                "max": values.max(0).values.tolist(),
            }
        return out

    def sampling_pool(self, start_frames: int, factor: int) -> torch.Tensor:
        """Frame indices an epoch draws from: every frame once, and each episode's first `start_frames` frames
        `factor` times. Why: the frames where the arm leaves its start pose are where a policy decides which object
        to reach for, and they are a small share of a dataset whose episodes mostly hold, grasp and lift."""
        if factor < 1 or start_frames < 0:
            raise ValueError(f"oversampling needs factor >= 1 and start_frames >= 0, got {factor}, {start_frames}")
        every = torch.arange(len(self))
        early = torch.nonzero(every - self._episode_start < start_frames).flatten()
        return torch.cat([every, early.repeat(factor - 1)])

    def batch(
        self, indices: Sequence[int], chunk_size: int, future_horizon: int = 0, environment_state: bool = False
    ) -> dict[str, object]:
        """The policy's training batch for frames `indices`: images in [0, 1], the H-step chunk and its pad mask;
        with `future_horizon` > 0 also the state that many frames ahead (the episode's last one past its end);
        with `environment_state` the frames' environment states (ValueError when the dataset has none)."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        offsets = torch.arange(chunk_size)
        wanted = idx[:, None] + offsets[None]  # (B, H) frame of each chunk step
        end = self._episode_end[idx][:, None]
        is_pad = wanted > end
        action = self.action[torch.minimum(wanted, end)]  # past the end: repeat the last action (hold still)
        batch = {
            "images": [self.images[c][idx].float() / 255.0 for c in self.cameras],
            "instruction": [self.tasks[i] for i in self.task_index[idx].tolist()],
            "state": self.state[idx],
            "action": action,
            "action_is_pad": is_pad,
        }
        if future_horizon > 0:
            batch["future_state"] = self.state[torch.minimum(idx + future_horizon, self._episode_end[idx])]
        if environment_state:
            if self.environment_state is None:
                raise ValueError("the dataset has no observation.environment_state (recorded by `mole-vla record`)")
            batch["environment_state"] = self.environment_state[idx]
        return batch


def resize_frames(frames: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) uint8, keeping aspect with left/top padding like the policy's
    own `prepare_image`, so the stored frames equal what the policy would compute from the full-size image."""
    from mole_vla_ros.policy.processor import prepare_image

    frames = torch.as_tensor(np.asarray(frames))
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"frames must be (N, H, W, 3) uint8, got {tuple(frames.shape)} {frames.dtype}")
    out = torch.empty(frames.shape[0], 3, size, size, dtype=torch.uint8)  # filled in place: no second copy
    for start in range(0, frames.shape[0], 256):  # bounded memory for long datasets
        chunk = frames[start : start + 256].permute(0, 3, 1, 2).float() / 255.0
        resized = (prepare_image(chunk, size) + 1.0) / 2.0  # back from [-1, 1] to [0, 1]
        out[start : start + 256] = (resized * 255.0).round().clamp(0, 255).to(torch.uint8)
    return out


def load_dataset(path: str | Path, image_size: int, cameras: Sequence[str] | None = None) -> FrameDataset:
    """A LeRobot v3.0 dataset folder (read with the suite's reader, joints converted to radians) into memory,
    images resized to `image_size`."""
    from mole_vla_ros.data.lerobot_dataset import LeRobotDatasetReader

    reader = LeRobotDatasetReader(path, chunk_size=1, cameras=cameras)
    if not reader.cameras:
        raise ValueError(f"{path}: the dataset has no camera videos; the policy needs at least one image")
    task_ids = sorted(reader.tasks)
    remap = {old: new for new, old in enumerate(task_ids)}
    # One camera's decoded frames at a time: each is dropped once resized, so a load never holds two cameras' videos.
    images, source_hw = {}, None
    for name in reader.cameras:
        frames = reader.frames(name, cache=False)
        source_hw = source_hw or tuple(frames.shape[1:3])
        images[name] = resize_frames(frames, image_size)
        del frames
    return FrameDataset(
        images=images,
        state=torch.as_tensor(reader.state, dtype=torch.float32),
        action=torch.as_tensor(reader.action, dtype=torch.float32),
        episode_index=torch.as_tensor(reader.episode_index, dtype=torch.long),
        task_index=torch.as_tensor([remap[int(t)] for t in reader.task_index], dtype=torch.long),
        tasks=[reader.tasks[t] for t in task_ids],
        fps=float(reader.fps),
        source_hw=source_hw,  # type: ignore[arg-type]
        environment_state=None if reader.environment_state is None else torch.as_tensor(reader.environment_state),
    )


def batch_indices(num_frames: int, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1) -> list[int]:
    """Frame indices of `step`'s batch on `rank`: epochs are seeded permutations, each global batch of
    batch_size * world frames split by rank. Deterministic, so resume needs no sampler state."""
    global_batch = batch_size * world
    if global_batch > num_frames:
        raise ValueError(f"batch of {global_batch} frames is larger than the dataset ({num_frames} frames)")
    per_epoch = num_frames // global_batch  # drop the ragged tail so every batch is full
    epoch, within = divmod(step, per_epoch)
    order = torch.randperm(num_frames, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    start = within * global_batch + rank * batch_size
    return order[start : start + batch_size].tolist()


def to_device(batch: dict[str, object], device: torch.device) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            out[key] = value.to(device, non_blocking=True)
        elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            out[key] = [v.to(device, non_blocking=True) for v in value]
        else:
            out[key] = value
    return out


def synthetic_dataset(episodes: int = 4, frames: int = 24, size: int = 32, seed: int = 0) -> FrameDataset:
    """A small learnable dataset for tests: the colour of a square in the image and the instruction both name
    which of three targets the arm moves to; actions step the state toward that target."""
    rng = np.random.default_rng(seed)
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 220)}
    targets = {"red": 0.6, "green": -0.4, "blue": 0.1}
    imgs, states, actions, eps, tasks_idx = [], [], [], [], []
    names = list(colours)
    for ep in range(episodes):
        colour = names[ep % len(names)]
        image = np.full((size, size, 3), 90, np.uint8)
        x, y = rng.integers(0, size // 2, 2)
        image[y : y + size // 3, x : x + size // 3] = colours[colour]
        q = rng.uniform(-0.3, 0.3, 6)
        for _ in range(frames):
            act = q + 0.15 * (targets[colour] - q)
            imgs.append(image)
            states.append(q.copy())
            actions.append(act)
            eps.append(ep)
            tasks_idx.append(names.index(colour))
            q = act
    return FrameDataset(
        images={"scene": resize_frames(np.stack(imgs), size)},
        state=torch.tensor(np.array(states), dtype=torch.float32),
        action=torch.tensor(np.array(actions), dtype=torch.float32),
        episode_index=torch.tensor(eps),
        task_index=torch.tensor(tasks_idx),
        tasks=[f"move to the {c} mark" for c in names],
        fps=30.0,
    )
