"""Multi-rank training on torch.distributed (DDP): the same `mole-vla train` under `torchrun` or `accelerate launch`.

What a rank does differently from a lone process:
- the process group comes from the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT):
  nccl on CUDA, gloo on CPU; each rank drives cuda:LOCAL_RANK;
- the policy is wrapped in DistributedDataParallel, so gradients are averaged across ranks in backward;
- a step's global batch is `batch_size x world_size x grad_accum` frames, cut into `world_size x grad_accum`
  shards by data.batch_indices (shard = rank x grad_accum + micro-step): one rank with --grad-accum 2 sees exactly
  the frames that two ranks see, which is what makes a resume on a different number of ranks continue the run;
- the flow-matching noise and time of a shard are drawn from a generator seeded by (seed, step, shard), not from
  a per-process stream, so they too depend on the shard and not on which process computes it;
- losses are averaged across ranks before logging; only rank 0 writes checkpoints, curves and the progress bar;
- on CUDA the forward pass runs under bf16 autocast (weights and optimizer states stay fp32); fp16 autocast
  (GPUs without bf16) adds torch's GradScaler, whose state travels in the checkpoint.

The torch machinery is used as it is (DDP, no_sync for accumulation, autocast); nothing here reimplements it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from mole_vla_ros.train import checkpoint as ckpt
from mole_vla_ros.train.data import FrameDataset
from mole_vla_ros.train.runtime import Runtime, resolve_runtime
from mole_vla_ros.train.train import TrainConfig, Trainer

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LAUNCH_OPTIONS = ("grad_accum", "precision")


def add_launch_args(parser: argparse.ArgumentParser) -> None:
    """`mole-vla train`'s scale-out options, shown in its --help; main() hands them to make_trainer."""
    g = parser.add_argument_group("scale-out (also under torchrun / accelerate launch)")
    g.add_argument(
        "--grad-accum",
        type=int,
        default=1,
        help="micro-batches of --batch-size per optimizer step; samples per step = batch-size x this x ranks",
    )
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="autocast dtype (weights and AdamW stay fp32). auto: bf16 on a GPU that has it, else fp32; "
        "fp16 adds loss scaling (GradScaler); on a CPU bf16/fp16 run emulated, slower than fp32",
    )


def make_trainer(cfg: TrainConfig, resume: bool, grad_accum: int = 1, precision: str = "auto") -> Trainer:
    """The plain Trainer for one process in fp32 without accumulation; the DistributedTrainer otherwise."""
    rt = runtime_from_env(resolve_runtime(cfg.device).device)
    try:
        plain = rt.world_size == 1 and grad_accum == 1 and resolve_precision(precision, rt.device) is None
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if plain:
        return Trainer(cfg, rt, resume=resume)
    return DistributedTrainer(cfg, rt, resume=resume, grad_accum=grad_accum, precision=precision)


def runtime_from_env(device: torch.device, timeout_s: float = 600.0) -> Runtime:
    """The launcher's rank layout on `device` (resolved by runtime.resolve_runtime), with the process group
    initialised when there is more than one rank. CUDA ranks move to cuda:LOCAL_RANK."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not (0 <= rank < world):
        raise SystemExit(f"RANK={rank} is outside WORLD_SIZE={world}")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
    rt = Runtime(device, rank, world, local)
    if world > 1:
        init_process_group(rt, timeout_s)
    return rt


def init_process_group(rt: Runtime, timeout_s: float = 600.0) -> None:
    """Join the launcher's group (env:// rendezvous): nccl for CUDA ranks, gloo for CPU ranks."""
    if dist.is_initialized():
        return
    backend = "nccl" if rt.device.type == "cuda" else "gloo"
    if rt.device.type == "cuda":
        torch.cuda.set_device(rt.device)
    dist.init_process_group(
        backend, rank=rt.rank, world_size=rt.world_size, timeout=datetime.timedelta(seconds=timeout_s)
    )


def shutdown() -> None:
    if dist.is_initialized():
        dist.barrier()  # rank 0 may still be writing the final checkpoint
        dist.destroy_process_group()


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. `auto` = bf16 on a GPU that supports it, fp32 elsewhere
    (on a CPU, bf16 and fp16 autocast run but are slower than fp32: they are there to check a GPU recipe).
    bf16 on a GPU without it (before Ampere) is refused with the fp16 alternative."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r} not in {PRECISIONS}")
    gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "bf16" and device.type == "cuda" and not gpu_bf16:
        raise ValueError("--precision bf16: this GPU has no bf16 support; use --precision fp16 (loss-scaled) or fp32")
    if precision == "auto":
        return torch.bfloat16 if gpu_bf16 else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def shard_seed(seed: int, step: int, shard: int) -> int:
    """Seed of the noise of one shard of one step: distinct across shards and steps, identical on any layout."""
    return (seed * 1_000_003 + step) * 4_099 + shard + 1


class DistributedTrainer(Trainer):
    """A Trainer whose step spans `world_size` ranks x `grad_accum` micro-batches of `batch_size` frames each.

    With one rank and grad_accum 1 it trains the same model as Trainer, except that its noise comes from the
    per-shard seed (so the same run continues bit-for-bit on another rank layout with the same global batch).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        runtime: Runtime,
        data: FrameDataset | None = None,
        resume: bool = False,
        grad_accum: int = 1,
        precision: str = "auto",
    ) -> None:
        if grad_accum < 1:
            raise ValueError(f"--grad-accum must be >= 1, got {grad_accum}")
        self.grad_accum = grad_accum
        self.autocast_dtype = resolve_precision(precision, runtime.device)
        # fp16's narrow range needs loss scaling (bf16 has fp32's range); disabled, the scaler is a pass-through.
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=self.autocast_dtype is torch.float16)
        super().__init__(cfg, runtime, data, resume)
        self.shards = self.rt.world_size * grad_accum
        if len(self.data) < cfg.batch_size * self.shards:
            raise SystemExit(
                f"global batch {cfg.batch_size} x {self.rt.world_size} ranks x {grad_accum} accumulation "
                f"is larger than the dataset ({len(self.data)} frames)"
            )
        self.model: torch.nn.Module = self.policy
        if self.rt.world_size > 1:
            # find_unused_parameters: the last kept layer's attention output and MLP feed nothing the loss reads
            # (the expert reads its K/V only), and which parameters are used depends on the loss weights.
            self.model = DistributedDataParallel(
                self.policy,
                device_ids=[self.rt.device.index] if self.rt.device.type == "cuda" else None,
                find_unused_parameters=True,
            )

    @property
    def global_batch(self) -> int:
        return self.cfg.batch_size * self.rt.world_size * self.grad_accum

    @property
    def samples_per_step(self) -> int:
        return self.global_batch

    def training_state(self) -> dict[str, Any]:
        return super().training_state() | {
            "grad_scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        super().load_training_state(state)
        if state.get("grad_scaler") and self.scaler.is_enabled():  # an fp32/bf16 run resumed in fp16: default scale
            self.scaler.load_state_dict(state["grad_scaler"])

    def _find_resume_point(self) -> Path:
        found = super()._find_resume_point()
        saved = ckpt.read_json(found, "train_config.json") or {}
        before = saved.get("global_batch", saved.get("batch_size"))
        now = self.cfg.batch_size * self.rt.world_size * self.grad_accum
        if before != now:
            raise SystemExit(
                f"--resume: the checkpoint's run used a global batch of {before} frames per step, this launch "
                f"{now} (batch_size x ranks x grad_accum); change --grad-accum to keep {before}, e.g. "
                f"{saved.get('world_size', 1)} ranks x {saved.get('grad_accum', 1)} -> 1 rank x "
                f"{(before or 0) // max(1, self.cfg.batch_size)}"
            )
        return found

    def meta(self) -> dict[str, Any]:
        meta = super().meta()
        meta["train_config"] |= {
            "world_size": self.rt.world_size,
            "grad_accum": self.grad_accum,
            "global_batch": self.global_batch,
            "autocast": None if self.autocast_dtype is None else str(self.autocast_dtype).removeprefix("torch."),
        }
        return meta

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.rt.device.type, dtype=self.autocast_dtype)

    def _micro_batches(self) -> Iterator[tuple[int, dict[str, object]]]:
        for micro in range(self.grad_accum):
            shard = self.rt.rank * self.grad_accum + micro
            yield shard, self.load_batch(self.draw(self.step, shard, self.shards))

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        stage, budget, lr = self.begin_step()
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for shard, batch in self._micro_batches():
            last = shard % self.grad_accum == self.grad_accum - 1
            # Gradients are all-reduced once per step, on the last micro-batch; earlier ones only accumulate.
            sync = contextlib.nullcontext() if last or self.model is self.policy else self.model.no_sync()
            with sync:
                with self._autocast(), _seeded(shard_seed(cfg.seed, self.step, shard), self.rt.device):
                    loss, parts = self.model(batch, budget=budget)
                self._check_finite(loss, parts)  # fp16 gradient overflows are the scaler's: it skips that step
                self.scaler.scale(loss / self.grad_accum).backward()
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + value / self.grad_accum
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.policy.update_teacher()
        self.step += 1
        return {"stage": stage, "budget": budget, "lr": lr, **self._mean_over_ranks(totals)}

    def _check_finite(self, loss: torch.Tensor, parts: dict[str, float]) -> None:
        """Every rank stops together: a rank that raised alone would leave the others waiting in all-reduce."""
        bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=self.rt.device)
        if self.rt.world_size > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bad.item():
            raise FloatingPointError(f"non-finite loss at step {self.step} (on some rank); this rank's parts: {parts}")

    def _mean_over_ranks(self, parts: dict[str, float]) -> dict[str, float]:
        if self.rt.world_size == 1:
            return parts
        keys = sorted(parts)
        values = torch.tensor([parts[k] for k in keys], dtype=torch.float64, device=self.rt.device)
        dist.all_reduce(values)
        return dict(zip(keys, (values / self.rt.world_size).tolist(), strict=True))


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block on a fresh torch RNG stream, restoring the process's stream afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
