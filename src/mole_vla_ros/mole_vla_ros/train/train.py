"""`mole-vla train`: flow matching + STAR routing at a layer budget + CogKD, on a LeRobot v3.0 dataset.

Stages (MoLe trains the router with distillation on top of a working VLA; `--stage`):
- full:   every kept layer active (budget 1.0), flow-matching loss only: the teacher the router stage distils from.
- router: the STAR router picks k = budget x L layers (straight-through top-k), loss = flow + kd_weight x CogKD
          + balance_weight x load balance; the full-depth network (live, or its EMA with --ema-decay) is the teacher.
- both:   `full` for the first --full-fraction of the steps, then `router` (the default); the model at the
          change is kept in <out>/stage_full, so ablations (e.g. --no-cogkd) can start from the same point with
          `--checkpoint <out>/stage_full --stage router`.
One AdamW and one warm-up + cosine learning-rate curve span both stages, so a resume lands on the same schedule.

    mole-vla train --dataset data/sim_pick --out runs/tiny --preset tiny --steps 3000 --batch-size 32

Several GPUs or nodes: the same command under `torchrun` / `accelerate launch`, with `--grad-accum` and
`--precision` (train/distributed.py; the commands are in docs/scale_out.md).

Resume (`--resume`) continues from <out>/checkpoints/last and gives the same weights as an uninterrupted run
(same seed, same command): the batch order is a function of (seed, step), and the RNG and optimizer states travel
in the checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mole_vla_ros.policy import MoLeConfig, MoLePolicy
from mole_vla_ros.train import checkpoint as ckpt
from mole_vla_ros.train.augment import swap_colours
from mole_vla_ros.train.curves import LOSS_TERMS, write_curves
from mole_vla_ros.train.data import FrameDataset, batch_indices, load_dataset, to_device
from mole_vla_ros.train.runtime import Runtime, resolve_runtime, rng_state, seed_everything, set_rng_state

STAGES = ("full", "router", "both")
START_SECONDS = 1.5  # --oversample-start: the opening of an episode, where the arm leaves its start pose


@dataclass(frozen=True)
class TrainConfig:
    dataset: str
    out: str
    preset: str | None = "tiny"
    checkpoint: str | None = None
    # A checkpoint folder (with training_state.pt) of another run whose weights, optimizer, step and RNG this run
    # continues under its own settings: an ablation that shares that run's history up to the fork (e.g. no CogKD
    # from the main run's stage_full), on the same learning-rate schedule and batches.
    fork: str | None = None
    steps: int = 1000
    batch_size: int = 16
    lr: float = 3e-4
    warmup: int = 100
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    budget: float = 0.5
    # Router stage: each step trains at one of these budgets or --budget, drawn by seed and step (empty: --budget).
    mixed_budgets: tuple[float, ...] = ()
    cogkd: bool = True
    kd_weight: float = 0.5
    balance_weight: float = 0.01
    router_lr_scale: float = 1.0
    ema_decay: float = 0.0
    colour_swap: float = 0.0  # augment.swap_colours probability per sample
    oversample_start: int = 1  # each episode's first START_SECONDS are drawn this many times per epoch
    stage: str = "both"
    full_fraction: float = 0.5
    freeze_vision: bool | None = None
    save_every: int = 500
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # MoLeConfig fields over the preset

    def __post_init__(self) -> None:
        if (self.preset is None) == (self.checkpoint is None):
            raise ValueError("give exactly one of --preset and --checkpoint")
        if self.stage not in STAGES:
            raise ValueError(f"--stage {self.stage!r} not in {STAGES}")
        ints = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "save_every": self.save_every,
            "log_every": self.log_every,
        }
        bad = {k: v for k, v in ints.items() if v < 1}
        if bad or self.warmup < 0:
            raise ValueError(f"must be >= 1 (warmup >= 0): {bad or {'warmup': self.warmup}}")
        if not (0.0 < self.budget <= 1.0 and 0.0 <= self.full_fraction <= 1.0):
            raise ValueError(
                f"--budget must be in (0, 1] and --full-fraction in [0, 1], got {self.budget}, {self.full_fraction}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)) or min(self.kd_weight, self.balance_weight) < 0:
            raise ValueError("--lr must be > 0 and loss weights >= 0")
        if not (self.router_lr_scale > 0 and math.isfinite(self.router_lr_scale)):
            raise ValueError(f"--router-lr-scale must be > 0, got {self.router_lr_scale}")
        if self.overrides and self.preset is None:
            raise ValueError("--set changes a preset; a --checkpoint keeps its own config")
        object.__setattr__(self, "mixed_budgets", tuple(float(b) for b in self.mixed_budgets))
        if any(not 0.0 < b <= 1.0 for b in self.mixed_budgets):
            raise ValueError(f"--mixed-budgets must be in (0, 1], got {list(self.mixed_budgets)}")
        if self.oversample_start < 1:
            raise ValueError(f"--oversample-start must be >= 1, got {self.oversample_start}")
        if not 0.0 <= self.colour_swap <= 1.0:
            raise ValueError(f"--colour-swap must be in [0, 1], got {self.colour_swap}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")

    def stage_at(self, step: int) -> str:
        if self.stage != "both":
            return self.stage
        return "full" if step < round(self.full_fraction * self.steps) else "router"

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine down to 10% (SmolVLA: warm-up + cosine)."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def stage_config(base: MoLeConfig, cfg: TrainConfig, stage: str, step: int) -> tuple[MoLeConfig, float]:
    """The policy config and budget of a stage at `step`: the full stage has nothing to distil or balance; the router
    stage trains at --budget, or at one of --mixed-budgets and --budget drawn by seed and step (so the model also
    works at the budgets it is not shipped with; a resumed run draws the same)."""
    if stage == "full":
        return dataclasses.replace(base, w_kd=0.0, w_balance=0.0, ema_decay=cfg.ema_decay), 1.0
    kd = cfg.kd_weight if cfg.cogkd else 0.0
    budget = cfg.budget
    if cfg.mixed_budgets:
        budget = random.Random(cfg.seed * 1_000_003 + step).choice((cfg.budget, *cfg.mixed_budgets))
    return dataclasses.replace(base, w_kd=kd, w_balance=cfg.balance_weight, ema_decay=cfg.ema_decay), budget


def build_policy(cfg: TrainConfig) -> MoLePolicy:
    if cfg.checkpoint is not None:
        return MoLePolicy.from_pretrained(cfg.checkpoint).train()
    return MoLePolicy(MoLeConfig.preset(cfg.preset, **cfg.overrides))


# Settings a resumed run must share with the run it continues (others, e.g. --steps or --save-every, may change).
RESUME_FIXED = (
    "seed",
    "batch_size",
    "lr",
    "warmup",
    "budget",
    "mixed_budgets",
    "stage",
    "full_fraction",
    "preset",
    "checkpoint",
    "cogkd",
    "kd_weight",
    "balance_weight",
    "router_lr_scale",
    "ema_decay",
    "oversample_start",
)


class Trainer:
    """One training run; `run(stop_at=None)` trains to cfg.steps (or stops early after `stop_at`, for tests).

    `resume=True` continues from <out>/checkpoints/last. `data` (already in memory) replaces --dataset.
    """

    def __init__(
        self, cfg: TrainConfig, runtime: Runtime | None = None, data: FrameDataset | None = None, resume: bool = False
    ) -> None:
        self.cfg = cfg
        self.rt = runtime or resolve_runtime(cfg.device)
        self.out = Path(cfg.out)
        resume_from = self._find_resume_point() if resume else None
        if resume_from is None and cfg.fork is not None:
            resume_from = self._fork_point(Path(cfg.fork))
        seed_everything(cfg.seed)
        self.policy = build_policy(cfg)
        self.base_config = self.policy.config
        self.data = data if data is not None else load_dataset(cfg.dataset, self.base_config.input_size)
        if len(self.data) < cfg.batch_size:
            raise SystemExit(f"--batch-size {cfg.batch_size} is larger than the dataset ({len(self.data)} frames)")
        if self.base_config.w_env_state > 0:
            found = self.data.environment_state
            width = None if found is None else found.shape[1]
            if width != self.base_config.env_state_dim:
                raise SystemExit(
                    f"w_env_state needs the dataset's observation.environment_state with env_state_dim="
                    f"{self.base_config.env_state_dim} values; {cfg.dataset} has {width} (re-record with mole-vla "
                    "record, or leave w_env_state at 0)"
                )
        self.stats = self.data.stats()
        start_frames = round(START_SECONDS * self.data.fps)
        self.pool = self.data.sampling_pool(start_frames, cfg.oversample_start) if cfg.oversample_start > 1 else None
        self.policy.set_normalization(self.stats)
        freeze = cfg.freeze_vision if cfg.freeze_vision is not None else self.base_config.vlm_name is not None
        if freeze:  # SmolVLA/MoLe freeze the pretrained vision encoder; a from-scratch one must learn
            self.policy.backbone.vlm.vision_model.requires_grad_(False)
        self.policy.to(self.rt.device)
        # The router gets its own learning-rate scale: it starts learning only when the budget bites (router
        # stage), late on the cosine curve, and at the shared rate its scores stayed near uniform (input-blind).
        router_ids = {id(p) for p in self.policy.router.parameters()}
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in trainable if id(p) not in router_ids], "lr_scale": 1.0},
            {"params": [p for p in trainable if id(p) in router_ids], "lr_scale": cfg.router_lr_scale},
        ]
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step = 0
        self.wall_s = 0.0  # training time over all resumed segments, for the checkpoint card
        self.history: list[dict[str, Any]] = []
        if resume_from is not None:
            self._restore(resume_from)

    def _find_resume_point(self) -> Path:
        found = ckpt.last_checkpoint(self.out)
        if found is None:
            raise SystemExit(f"--resume: no checkpoint under {self.out}/checkpoints")
        saved = ckpt.read_json(found, "train_config.json") or {}
        fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
        # JSON gives lists for tuples; a setting newer than the checkpoint counts as its default.
        was = {k: _as_tuple(saved.get(k, fields[k].default)) for k in RESUME_FIXED}
        changed = {k: (was[k], getattr(self.cfg, k)) for k in RESUME_FIXED if was[k] != getattr(self.cfg, k)}
        if changed:
            raise SystemExit(f"--resume with settings that differ from the checkpoint's run (saved, now): {changed}")
        return found

    def _fork_point(self, folder: Path) -> Path:
        if not (folder / ckpt.STATE_FILE).is_file():
            raise SystemExit(
                f"--fork {folder}: not a training checkpoint (no {ckpt.STATE_FILE}); use a run's checkpoints/step_* "
                "or stage_full folder (or --checkpoint to fine-tune from a policy folder)"
            )
        return folder

    def _restore(self, folder: Path) -> None:
        weights = MoLePolicy.from_pretrained(folder).state_dict()
        try:
            self.policy.load_state_dict(weights)
        except RuntimeError as exc:  # a fork from a run with another model config
            raise SystemExit(f"cannot continue from {folder}: its model differs from this run's ({exc})") from exc
        self.load_training_state(ckpt.load_training_state(folder))

    def load_training_state(self, state: dict[str, Any]) -> None:
        """The inverse of training_state (weights already loaded)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.wall_s = float(state.get("wall_s", 0.0))
        if state.get("teacher") is not None:
            self.policy.update_teacher()  # creates the EMA copy, then overwrite it with the saved one
            self.policy.teacher.load_state_dict(state["teacher"])
        set_rng_state(state["rng"])

    def meta(self) -> dict[str, Any]:
        d = self.data
        return {
            "stats": self.stats,
            "dataset": {
                "path": str(self.cfg.dataset),
                "cameras": d.cameras,
                "fps": d.fps,
                "image_hw": d.source_hw,
                "tasks": d.tasks,
                "episodes": d.num_episodes,
                "frames": len(d),
            },
            "train_config": dataclasses.asdict(self.cfg)
            | {"completed_steps": self.step, "train_wall_s": round(self.wall_s, 1)},
        }

    @property
    def samples_per_step(self) -> int:
        """Frames one optimizer step consumes over all ranks (the distributed trainer adds accumulation)."""
        return self.cfg.batch_size * self.rt.world_size

    def training_state(self) -> dict[str, Any]:
        """What a resume needs beyond the weights."""
        teacher = self.policy.teacher
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(),
            "history": self.history,
            "wall_s": self.wall_s,
            "teacher": None if teacher is None else teacher.state_dict(),
        }

    def save(self) -> Path | None:
        if not self.rt.is_main:
            return None
        folder = ckpt.save_checkpoint(self.out, self.step, self.policy, self.training_state(), self.meta())
        write_curves(self.history, self.out)
        return folder

    def draw(self, step: int, shard: int, shards: int) -> list[int]:
        """Frame indices of `step`'s batch on `shard` of `shards` (data.batch_indices over the sampling pool)."""
        size = len(self.data) if self.pool is None else len(self.pool)
        idx = batch_indices(size, self.cfg.batch_size, step, self.cfg.seed, shard, shards)
        return idx if self.pool is None else self.pool[idx].tolist()

    def load_batch(self, indices: list[int]) -> dict[str, object]:
        """Frames `indices` as a training batch on the device, with the future and environment states when the policy
        learns them."""
        base = self.base_config
        horizon = base.future_horizon if base.w_future > 0 else 0
        batch = self.data.batch(indices, base.chunk_size, horizon, environment_state=base.w_env_state > 0)
        if self.cfg.colour_swap > 0:
            # Seeded by the run, the step and the frames: a resumed run draws the same swaps.
            seed = (self.cfg.seed * 1_000_003 + self.step) * 1_000_033 + indices[0]
            batch = swap_colours(batch, self.cfg.colour_swap, torch.Generator().manual_seed(seed))
        return to_device(batch, self.rt.device)

    def begin_step(self) -> tuple[str, float, float]:
        """Set this step's stage config, train mode and learning rates; returns (stage, budget, lr)."""
        stage = self.cfg.stage_at(self.step)
        self.policy.config, budget = stage_config(self.base_config, self.cfg, stage, self.step)
        self.policy.train()
        lr = self.cfg.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        return stage, budget, lr

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        stage, budget, lr = self.begin_step()
        batch = self.load_batch(self.draw(self.step, self.rt.rank, self.rt.world_size))
        loss, parts = self.policy(batch, budget=budget)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {self.step}: {parts}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.policy.update_teacher()
        self.step += 1
        return {"stage": stage, "budget": budget, "lr": lr, **parts}

    def run(self, stop_at: int | None = None, progress: bool = True) -> dict[str, Any]:
        from tqdm import tqdm

        cfg = self.cfg
        end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            disable=not (progress and self.rt.is_main),
            dynamic_ncols=True,
            desc="train",
        )
        window_start, window_steps = time.perf_counter(), 0
        while self.step < end:
            step_start = time.perf_counter()
            parts = self.train_step()
            self.wall_s += time.perf_counter() - step_start
            window_steps += 1
            if self.step % cfg.log_every == 0 or self.step == end:
                elapsed = time.perf_counter() - window_start
                row = {
                    "step": self.step,
                    **parts,
                    "samples_per_s": window_steps * self.samples_per_step / max(elapsed, 1e-9),
                }
                self.history.append(row)
                window_start, window_steps = time.perf_counter(), 0
                bar.set_postfix({k: f"{parts[k]:.4f}" for k in LOSS_TERMS} | {"stage": parts["stage"]})
            if self.rt.is_main and parts["stage"] == "full" and cfg.stage_at(self.step) == "router":
                # The full-depth model at the stage change: the teacher, and the start of router-stage ablations
                # (a policy folder for --checkpoint, with the training state, its last curve row included, for --fork).
                ckpt.write_training_checkpoint(self.out / "stage_full", self.policy, self.training_state(), self.meta())
            if self.step % cfg.save_every == 0 and self.step < cfg.steps:
                self.save()
                window_start, window_steps = time.perf_counter(), 0  # keep save time out of samples/s
            bar.update(1)
        bar.close()
        if self.step >= cfg.steps:
            self.save()
            if self.rt.is_main:
                ckpt.write_policy_folder(self.out / "final", self.policy, self.meta())
        return {"step": self.step, "history": self.history}


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _budget_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"budgets must read B,B,... with numbers, got {text!r}") from None


def _parse_overrides(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, Any]:
    fields = {f.name for f in dataclasses.fields(MoLeConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in fields:
            parser.error(f"--set {item!r}: expected FIELD=VALUE with FIELD one of MoLeConfig's fields")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw  # a bare string, e.g. --set skip_mode=project
    return out


def parse_args(argv: list[str] | None) -> tuple[TrainConfig, bool, dict[str, Any]]:
    """The run's TrainConfig, --resume, and the scale-out options (--grad-accum, --precision) for make_trainer."""
    from mole_vla_ros.train import distributed  # late: distributed imports this module

    d = TrainConfig(dataset="", out="")
    p = argparse.ArgumentParser(
        prog="mole-vla train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", required=True, help="LeRobot v3.0 dataset folder")
    p.add_argument("--out", required=True, help="run folder: checkpoints/, final/, curves.{csv,json,png}")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=sorted(["tiny", "smolvlm2-500m"]), help="new policy from a config preset")
    src.add_argument("--checkpoint", help="start from a policy folder or hub id (fine-tuning)")
    p.add_argument(
        "--fork",
        metavar="CHECKPOINT",
        help="continue another run's checkpoint (weights, optimizer, step, RNG; e.g. <run>/stage_full) under this "
        "run's settings, e.g. --no-cogkd: an ablation with the same history, schedule and batches",
    )
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup", type=int, default=d.warmup, help="linear warm-up steps before the cosine decay")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max gradient norm (0 = off)")
    p.add_argument("--budget", type=float, default=d.budget, help="fraction of kept layers the router keeps")
    p.add_argument(
        "--mixed-budgets",
        type=_budget_list,
        default=d.mixed_budgets,
        metavar="B,B,...",
        help="router stage: each step trains at --budget or one of these, e.g. 0.25,1.0 (the full row keeps working)",
    )
    p.add_argument("--cogkd", action=argparse.BooleanOptionalAction, default=d.cogkd, help="CogKD distillation")
    p.add_argument("--kd-weight", type=float, default=d.kd_weight)
    p.add_argument("--balance-weight", type=float, default=d.balance_weight)
    p.add_argument(
        "--router-lr-scale", type=float, default=d.router_lr_scale, help="router learning rate = this x --lr"
    )
    p.add_argument("--ema-decay", type=float, default=d.ema_decay, help="EMA teacher decay (0: the live network)")
    p.add_argument(
        "--colour-swap",
        type=float,
        default=d.colour_swap,
        help="per-sample probability of permuting the images' RGB channels and renaming red/green/blue in the "
        "instruction to match (counterfactual colour grounding; only for scenes coloured by these primaries)",
    )
    p.add_argument(
        "--oversample-start",
        type=int,
        default=d.oversample_start,
        help=f"draw each episode's first {START_SECONDS:g} s this many times per epoch (1 = uniform): the frames "
        "where the policy decides which object to reach for",
    )
    p.add_argument("--stage", choices=STAGES, default=d.stage)
    p.add_argument("--full-fraction", type=float, default=d.full_fraction, help="share of steps in the full stage")
    p.add_argument(
        "--freeze-vision",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="freeze the vision encoder (default: only when it comes pretrained)",
    )
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="cpu, cuda, cuda:N or auto")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a MoLeConfig field of the preset, e.g. --set chunk_size=16 (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/last")
    distributed.add_launch_args(p)
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0 = torch's default; 1 is faster on a CPU shared with other jobs)",
    )
    args = vars(p.parse_args(argv))
    resume = args.pop("resume")
    threads = args.pop("threads")
    launch = {key: args.pop(key) for key in distributed.LAUNCH_OPTIONS}
    if launch["grad_accum"] < 1:
        p.error(f"--grad-accum must be >= 1, got {launch['grad_accum']}")
    if threads > 0:
        torch.set_num_threads(threads)
    args["overrides"] = _parse_overrides(p, args["overrides"])
    if args["preset"] is None and args["checkpoint"] is None:
        args["preset"] = "tiny"
    try:
        return TrainConfig(**args), resume, launch
    except ValueError as exc:
        p.error(str(exc))
        raise  # unreachable: p.error exits


def main(argv: list[str] | None = None) -> int:
    from mole_vla_ros.train import distributed

    cfg, resume, launch = parse_args(argv)
    if not resume and ckpt.last_checkpoint(Path(cfg.out)) is not None:
        raise SystemExit(f"{cfg.out} already holds checkpoints: add --resume to continue, or choose a new --out")
    trainer = distributed.make_trainer(cfg, resume, **launch)
    start = time.perf_counter()
    try:
        result = trainer.run()
    finally:
        distributed.shutdown()
    if trainer.rt.is_main:
        last = result["history"][-1] if result["history"] else {}
        summary = {
            "steps": result["step"],
            "wall_s": round(time.perf_counter() - start, 1),
            "final": {k: last.get(k) for k in (*LOSS_TERMS, "samples_per_s")},
            "policy": str(Path(cfg.out) / "final"),
        }
        print(json.dumps(summary, indent=2))
    return 0
