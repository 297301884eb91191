"""`MoLePolicy`: the facade the rest of the suite codes against (LeRobot's four-method policy contract).

```
images ──SigLIP──connector──► visual tokens ─┐
instruction ──tokenizer──embed──► text tokens ├─► prefix [img | text | state | cog]
state ──normalise──pad──linear──► state token ┘        │
                                       STAR router (once, before layer 0) ──► top-k of L layers
                                                      │
                    kept decoder layers 0..L-1: active ones run, skipped ones are identity (skip.py)
                                                      │ per-layer K/V, computed once per chunk
noise ──► action expert layer l reads VLM layer l's K/V ──► velocity ──► 10 Euler steps ──► actions (radians)
```
"""

from __future__ import annotations

import copy
import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from . import cogkd
from .config import CheckpointError, MoLeConfig
from .expert import ActionExpert, euler_denoise, sample_time
from .flops import chunk_flops
from .processor import Normalizer, make_tokenizer, pad_last, prepare_image, tokenize
from .router import STARRouter, load_balance_loss, straight_through, top_k_mask
from .skip import PrefixOutput, run_layers
from .vlm import SmolVLMBackbone

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


@dataclass
class ChunkPrediction:
    actions: torch.Tensor  # (B, H, action_dim) radians, unnormalised
    active_mask: torch.Tensor  # (B, L) bool: the layers that ran
    scores: torch.Tensor  # (B, L) router probabilities
    flops_fraction: float  # analytic FLOPs of this call / FLOPs at full budget
    timings: dict[str, float] = field(default_factory=dict)  # seconds: vision, llm, expert, total


@dataclass
class _Prefix:
    embeds: torch.Tensor  # (B, T, D)
    mask: torch.Tensor  # (B, 1, T, T) bool attention mask
    pad: torch.Tensor  # (B, T) bool valid tokens
    rope: tuple[torch.Tensor, torch.Tensor]
    visual: torch.Tensor  # (B, V, D)
    text: torch.Tensor  # (B, Tl, D)
    text_mask: torch.Tensor  # (B, Tl)
    state: torch.Tensor  # (B, 1, D)


class MoLePolicy(nn.Module):
    def __init__(self, config: MoLeConfig, load_vlm_weights: bool = True) -> None:
        super().__init__()
        self.config = config
        self.backbone = SmolVLMBackbone(config)
        if config.vlm_name and load_vlm_weights:
            SmolVLMBackbone.load_pretrained_weights(self.backbone, config.vlm_name)
        self.router = STARRouter(config, self.backbone.num_layers)
        self.expert = ActionExpert(config, self.backbone.num_layers)
        self.state_proj = nn.Linear(config.max_state_dim, config.text_hidden)
        # SmolVLA has no cognition token; MoLe's CogKD needs one: a learned token at the end of the prefix.
        self.cognition = nn.Parameter(torch.randn(1, 1, config.text_hidden) * 0.02)
        # Training-only auxiliary (config.w_future): the cognition token's last hidden state predicts a later state.
        self.future_head = nn.Linear(config.text_hidden, config.max_state_dim) if config.w_future > 0 else None
        self.env_state_head = nn.Linear(config.text_hidden, config.env_state_dim) if config.w_env_state > 0 else None
        self.text_film = nn.Linear(config.text_hidden, 2 * config.text_hidden) if config.text_film else None
        self.vision_film = nn.Linear(config.text_hidden, 2 * config.vision_hidden) if config.vision_film else None
        for film in (self.text_film, self.vision_film):
            if film is not None:  # identity at init: (1 + 0) * features + 0
                nn.init.zeros_(film.weight)
                nn.init.zeros_(film.bias)
        self.normalizer = Normalizer(config)
        self.tokenizer = make_tokenizer(config)
        # Instruction tokens that are padding in every row of a batch are dropped before the backbone: they are
        # masked everywhere (and positions count real tokens only), so the outputs are the same, but they made up a
        # quarter of the tiny preset's prefix (40 byte slots for ~22-byte sim tasks). Off where one fixed prefix
        # length matters more (compiled layers, fast_path.py).
        self.trim_text_padding = True
        self._queue: deque[torch.Tensor] = deque()
        self._teacher: SmolVLMBackbone | None = None  # EMA copy, kept out of state_dict/parameters on purpose
        self._quantized = False

    # --- properties and episode state
    @property
    def num_layers(self) -> int:
        return self.backbone.num_layers

    def reset(self) -> None:
        self._queue.clear()

    def set_normalization(self, stats: dict[str, dict[str, Any]]) -> None:
        self.normalizer.set_stats(stats)

    @property
    def teacher(self) -> SmolVLMBackbone | None:
        """The EMA teacher backbone CogKD distils from (None until the first `update_teacher` with ema_decay > 0;
        the live backbone is the teacher then). Not part of `state_dict()`: training checkpoints save it apart."""
        return self._teacher

    # --- prefix
    def _check_batch(self, batch: dict[str, Any]) -> int:
        missing = {"images", "instruction", "state"} - set(batch)
        if missing:
            raise ValueError(f"batch lacks {sorted(missing)}")
        images, state = batch["images"], batch["state"]
        if not isinstance(images, list | tuple) or not images:
            raise ValueError("batch['images'] must be a non-empty list of (B, 3, H, W) tensors, one per camera")
        b = state.shape[0] if state.dim() == 2 else -1
        if state.dim() != 2 or state.shape[1] != self.config.state_dim:
            raise ValueError(f"batch['state'] must be (B, {self.config.state_dim}), got {tuple(state.shape)}")
        if any(img.shape[0] != b for img in images) or len(batch["instruction"]) != b:
            raise ValueError(f"images, instruction and state disagree on batch size ({b})")
        if not torch.isfinite(state).all():
            raise ValueError("batch['state'] has non-finite values")
        return b

    def _embed_prefix(self, batch: dict[str, Any], timings: dict[str, float]) -> _Prefix:
        b = self._check_batch(batch)
        cfg = self.config
        start = time.perf_counter()
        cams = len(batch["images"])
        pixels = torch.cat([prepare_image(img, cfg.input_size) for img in batch["images"]])  # (cams*B, 3, S, S)
        ids, text_mask = tokenize(self.tokenizer, list(batch["instruction"]), cfg.tokenizer_max_length)
        if self.trim_text_padding:
            used = text_mask.any(0)  # columns (left or right padding) where some row has a real token
            ids, text_mask = ids[:, used], text_mask[:, used]
        ids, text_mask = ids.to(pixels.device), text_mask.to(pixels.device)
        text = self.backbone.embed_tokens(ids)  # (B, Tl, D)
        weights = text_mask.to(text.dtype).unsqueeze(-1)
        pooled = (text * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # (B, D) mean over real tokens
        patch_film = None
        if self.vision_film is not None:  # images are camera-major: repeat each sample's modulation per camera
            patch_film = self.vision_film(pooled).repeat(cams, 1).unsqueeze(1).chunk(2, dim=-1)
        visual = self.backbone.encode_images(pixels, patch_film)  # (cams*B, V, D)
        visual = visual.view(cams, b, *visual.shape[1:]).transpose(0, 1).flatten(1, 2)
        timings["vision"] = time.perf_counter() - start
        if self.text_film is not None:
            gamma, beta = self.text_film(pooled).unsqueeze(1).chunk(2, dim=-1)
            visual = visual.to(text.dtype) * (1.0 + gamma) + beta
        if cfg.scale_prefix_embeddings:
            scale = math.sqrt(text.shape[-1])
            visual, text = visual * scale, text * scale
        state = pad_last(self.normalizer.state(batch["state"].float()), cfg.max_state_dim)
        state_tok = self.state_proj(state.to(text.dtype)).unsqueeze(1)  # (B, 1, D)
        cog = self.cognition.to(text.dtype).expand(b, -1, -1)
        embeds = torch.cat([visual.to(text.dtype), text, state_tok, cog], dim=1)  # (B, T, D)
        ones = text_mask.new_ones(b, 1)
        pad = torch.cat([ones.expand(b, visual.shape[1]), text_mask, ones, ones], dim=1)  # (B, T)
        # Blocks: images+text see each other; the state token also sees them; the cognition token sees all.
        block = torch.zeros(pad.shape[1], device=pad.device)
        block[-2:] = torch.tensor([1.0, 2.0], device=pad.device)
        allowed = block[None, :] <= block[:, None]  # (T, T)
        mask = (allowed[None] & pad[:, None, :]).unsqueeze(1)  # (B, 1, T, T)
        positions = (pad.long().cumsum(-1) - 1).clamp_min(0)
        rope = self.backbone.rope(embeds, positions)
        return _Prefix(embeds, mask, pad, rope, visual, text, text_mask, state_tok)

    def _expert_inputs(self, prefix: _Prefix) -> tuple[tuple, tuple]:
        """Rotary tables and (joint, cross) attention masks for the H action tokens."""
        h = self.config.chunk_size
        b = prefix.pad.shape[0]
        start = prefix.pad.long().sum(-1, keepdim=True)  # (B, 1)
        positions = start + torch.arange(h, device=start.device)[None]
        rope = self.backbone.rope(prefix.embeds, positions)
        causal = torch.ones(h, h, dtype=torch.bool, device=start.device).tril()
        prefix_keys = prefix.pad[:, None, None, :].expand(b, 1, h, -1)  # (B, 1, H, T)
        joint = torch.cat([prefix_keys, causal[None, None].expand(b, 1, h, h)], dim=-1)
        return rope, (joint, prefix_keys)

    # --- inference
    @torch.no_grad()
    def predict_action_chunk(
        self,
        batch: dict[str, Any],
        budget: float | None = None,
        noise: torch.Tensor | None = None,
        active_mask: torch.Tensor | None = None,
    ) -> ChunkPrediction:
        """A chunk of H actions (radians) with only the router's top-k layers computed.

        `active_mask` (bool, (L,) or (B, L)) forces the layers that run instead of the router (static or random
        skipping, ablations); the router is then not run at all and `budget` must be left out.
        """
        self.eval()
        cfg = self.config
        if active_mask is not None and budget is not None:
            raise ValueError("give a budget or an active_mask, not both")
        k = cfg.num_active(budget) if active_mask is None else 0
        timings: dict[str, float] = {}
        start = time.perf_counter()
        device_type = next(self.parameters()).device.type
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16"):
            prefix = self._embed_prefix(batch, timings)
            llm_start = time.perf_counter()
            if active_mask is None:
                scores = self.router(prefix.visual, prefix.text, prefix.text_mask, prefix.state)  # (B, L)
                active = top_k_mask(scores, k)
            else:
                active = self._check_mask(active_mask, prefix.embeds.shape[0]).to(prefix.embeds.device)
                k = int(active.sum(-1).max())
                scores = active.float() / active.sum(-1, keepdim=True)
            out = run_layers(self.backbone, prefix.embeds, prefix.rope, prefix.mask, active, cfg.skip_mode)
            timings["llm"] = time.perf_counter() - llm_start
            expert_start = time.perf_counter()
            actions = self._denoise(prefix, out, active if cfg.skip_mode == "skip_expert" else None, noise)
            timings["expert"] = time.perf_counter() - expert_start
        actions = self.normalizer.unaction(actions[..., : cfg.action_dim].float())
        timings["total"] = time.perf_counter() - start
        if not torch.isfinite(actions).all():
            raise RuntimeError("the policy produced non-finite actions")
        fraction = chunk_flops(cfg, k / self.num_layers)["total"] / chunk_flops(cfg, 1.0)["total"]
        return ChunkPrediction(actions, active, scores.float(), fraction, timings)

    def _check_mask(self, mask: torch.Tensor, batch_size: int) -> torch.Tensor:
        """A forced layer mask as (B, L) bool with at least one active layer per row."""
        if mask.dtype != torch.bool:
            raise ValueError(f"active_mask must be a bool tensor, got {mask.dtype}")
        mask = mask.expand(batch_size, -1) if mask.dim() == 1 else mask
        if mask.shape != (batch_size, self.num_layers):
            raise ValueError(f"active_mask must be ({self.num_layers},) or ({batch_size}, {self.num_layers})")
        if not mask.any(-1).all():
            raise ValueError("active_mask must keep at least one layer per sample")
        return mask

    def _denoise(
        self, prefix: _Prefix, out: PrefixOutput, gate: torch.Tensor | None, noise: torch.Tensor | None
    ) -> torch.Tensor:
        cfg = self.config
        b = prefix.embeds.shape[0]
        cache = self.expert.prepare(out.keys, out.values)  # once per chunk
        rope, masks = self._expert_inputs(prefix)
        if noise is None:
            noise = torch.randn(b, cfg.chunk_size, cfg.max_action_dim, device=prefix.embeds.device)
        noise = noise.to(prefix.embeds.device, prefix.embeds.dtype)
        return euler_denoise(lambda x, t: self.expert(x, t, cache, rope, masks, gate), noise, cfg.num_steps)

    @torch.no_grad()
    def select_action(self, batch: dict[str, Any], budget: float | None = None) -> torch.Tensor:
        """One (B, action_dim) action; a new chunk is predicted when the queue runs dry (LeRobot's contract)."""
        if not self._queue:
            self._queue.extend(self.predict_action_chunk(batch, budget).actions.transpose(0, 1))
        return self._queue.popleft()

    # --- training
    def forward(self, batch: dict[str, Any], budget: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss = w_flow * flow matching + w_kd * CogKD + w_balance * load balance (+ w_future * future
        state + w_env_state * environment state), and its parts as floats."""
        if self._quantized:
            raise RuntimeError("an int8-quantised policy is inference-only")
        cfg = self.config
        if "action" not in batch:
            raise ValueError("training batch lacks 'action' (B, H, action_dim)")
        prefix = self._embed_prefix(batch, {})
        actions = batch["action"].float()
        b = prefix.embeds.shape[0]
        if actions.shape != (b, cfg.chunk_size, cfg.action_dim):
            raise ValueError(
                f"batch['action'] must be {(b, cfg.chunk_size, cfg.action_dim)}, got {tuple(actions.shape)}"
            )
        is_pad = batch.get("action_is_pad", torch.zeros(b, cfg.chunk_size, dtype=torch.bool)).to(actions.device)
        probs = self.router(prefix.visual, prefix.text, prefix.text_mask, prefix.state)
        k = cfg.num_active(budget)
        hard = top_k_mask(probs, k)
        # At full budget every layer runs whatever the scores say, so a straight-through gradient there only tells the
        # router to raise scores that have no effect: in the full stage it saturated the softmax (one-hot scores,
        # one fixed layer set for every input), and a saturated router stage has no gradient left to route with.
        # Decided from k, not from the mask: reading a device tensor back would sync a GPU on every training step.
        every_layer = k == probs.shape[-1]
        gate = hard.to(probs.dtype) if every_layer else straight_through(probs, hard)
        cog_index = prefix.embeds.shape[1] - 1
        student = run_layers(self.backbone, prefix.embeds, prefix.rope, prefix.mask, gate, cfg.skip_mode, cog_index)
        teacher = None
        if cfg.w_kd > 0:  # the teacher pass costs a full-depth forward: only when distillation counts
            with torch.no_grad():
                teacher_net = self._teacher if self._teacher is not None else self.backbone
                teacher = run_layers(
                    teacher_net, prefix.embeds.detach(), prefix.rope, prefix.mask, None, cfg.skip_mode, cog_index
                )

        target = pad_last(self.normalizer.action(actions), cfg.max_action_dim)  # (B, H, A)
        noise = torch.randn_like(target)
        t = sample_time(b, target.device).view(b, 1, 1)
        x_t = t * noise + (1 - t) * target
        cache = self.expert.prepare(student.keys, student.values)
        rope, masks = self._expert_inputs(prefix)
        velocity = self.expert(x_t, t.view(b), cache, rope, masks, gate if cfg.skip_mode == "skip_expert" else None)
        err = F.mse_loss(velocity, noise - target, reduction="none")[..., : cfg.action_dim].mean(-1)  # (B, H)
        keep = (~is_pad).float()
        flow = (err * keep).sum() / keep.sum().clamp_min(1.0)

        if teacher is None:
            kd = flow.new_zeros(())
        else:
            weights = cogkd.token_weights(teacher.cog_attention, student.cog_attention)
            if cfg.kd_target == "kv":
                kd = cogkd.cogkd_loss(
                    cogkd.kv_features(student.keys, student.values),
                    cogkd.kv_features(teacher.keys, teacher.values),
                    weights,
                )
            else:
                kd = cogkd.cogkd_loss([student.hidden], [teacher.hidden], weights)
        balance = load_balance_loss(probs.detach() if every_layer else probs, hard)  # constant 1.0 at full budget
        cognition = student.hidden[:, cog_index]
        future = self._future_loss(batch, cognition) if cfg.w_future > 0 else flow.new_zeros(())
        env_state = self._env_state_loss(batch, cognition) if cfg.w_env_state > 0 else flow.new_zeros(())
        total = (
            cfg.w_flow * flow
            + cfg.w_kd * kd
            + cfg.w_balance * balance
            + cfg.w_future * future
            + cfg.w_env_state * env_state
        )
        parts = {
            "loss": total.item(),
            "flow": flow.item(),
            "cogkd": kd.item(),
            "balance": balance.item(),
            "future": future.item(),
            "env_state": env_state.item(),
            "active_fraction": hard.float().mean().item(),
        }
        return total, parts

    def _future_loss(self, batch: dict[str, Any], cognition: torch.Tensor) -> torch.Tensor:
        """MSE (normalised units) of the state `future_horizon` frames ahead, predicted from the cognition token."""
        if "future_state" not in batch or self.future_head is None:
            raise ValueError("w_future > 0 needs batch['future_state'] (B, state_dim) and a policy built with it")
        future = batch["future_state"].float()
        if future.shape != (cognition.shape[0], self.config.state_dim):
            raise ValueError(f"batch['future_state'] must be (B, {self.config.state_dim}), got {tuple(future.shape)}")
        target = self.normalizer.state(future.to(cognition.device))
        return F.mse_loss(self.future_head(cognition)[:, : self.config.state_dim], target)

    def _env_state_loss(self, batch: dict[str, Any], cognition: torch.Tensor) -> torch.Tensor:
        """MSE (normalised units) of the frame's environment state (the sim: cube centres, named cube first),
        predicted from the cognition token."""
        if "environment_state" not in batch or self.env_state_head is None:
            raise ValueError("w_env_state > 0 needs batch['environment_state'] and a policy built with it")
        env = batch["environment_state"].float()
        if env.shape != (cognition.shape[0], self.config.env_state_dim):
            raise ValueError(
                f"batch['environment_state'] must be (B, {self.config.env_state_dim}), got {tuple(env.shape)}"
            )
        return F.mse_loss(self.env_state_head(cognition), self.normalizer.env_state(env.to(cognition.device)))

    @torch.no_grad()
    def update_teacher(self) -> None:
        """EMA teacher update (MoLe: decay 0.999); call after each optimizer step. No-op when ema_decay == 0."""
        decay = self.config.ema_decay
        if decay == 0.0:
            return
        if self._teacher is None:
            # object.__setattr__: a plain attribute, so the teacher stays out of state_dict() and parameters().
            object.__setattr__(self, "_teacher", copy.deepcopy(self.backbone).requires_grad_(False))
            return
        for mine, ema in zip(self.backbone.parameters(), self._teacher.parameters(), strict=True):
            ema.lerp_(mine, 1.0 - decay)

    # --- inference-only speed options
    def quantize_int8_(self) -> MoLePolicy:
        """Dynamic int8 quantisation of every Linear (weights int8, activations quantised per call). In place;
        the policy becomes inference-only. On this CPU int8 GEMMs run ~1.8x the fp32 peak."""
        torch.ao.quantization.quantize_dynamic(self, {nn.Linear}, dtype=torch.qint8, inplace=True)
        self._quantized = True
        return self

    # --- checkpoints
    def save_pretrained(self, folder: str | Path) -> None:
        if self._quantized:
            raise RuntimeError("save the float policy, not its int8-quantised copy")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.save(folder / CONFIG_FILE)
        tensors = {k: v.detach().contiguous().clone() for k, v in self.state_dict().items()}
        save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **overrides: Any) -> MoLePolicy:
        """Load a folder with config.json + model.safetensors, or download one from the hub by id."""
        folder = Path(name_or_path)
        if not folder.is_dir():
            if folder.exists() or str(name_or_path).startswith((".", "/", "~")):
                raise CheckpointError(f"{name_or_path} is not a checkpoint folder")
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(repo_id=str(name_or_path), allow_patterns=[CONFIG_FILE, WEIGHTS_FILE]))
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (folder / name).is_file():
                raise CheckpointError(f"{folder} has no {name}")
        config = MoLeConfig.load(folder / CONFIG_FILE)
        if overrides:
            config = MoLeConfig.from_dict({**config.to_dict(), **overrides})
        policy = cls(config, load_vlm_weights=False)
        try:
            tensors = load_file(str(folder / WEIGHTS_FILE))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{folder / WEIGHTS_FILE} is truncated or corrupt: {exc}") from exc
        _check_tensors(policy.state_dict(), tensors, folder / WEIGHTS_FILE)
        policy.load_state_dict(tensors, strict=True)
        if config.quantize_int8:
            policy.quantize_int8_()
        return policy.eval()


def _check_tensors(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], path: Path) -> None:
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: missing {missing[:5]} (+{max(0, len(missing) - 5)}), unexpected {unexpected[:5]}"
        )
    wrong = [
        f"{k}: {tuple(found[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if found[k].shape != v.shape
    ]
    if wrong:
        raise CheckpointError(f"{path}: {len(wrong)} tensors have the wrong shape for this config, e.g. {wrong[:3]}")
