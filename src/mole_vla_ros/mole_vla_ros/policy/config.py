"""`MoLeConfig`: every hyperparameter of the MoLe-VLA policy in one frozen, validated, JSON-saved dataclass."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT_VERSION = 2  # 2: scale_prefix_embeddings, router_input_norm (format 1 loads with both off, as trained)
SKIP_MODES = ("project", "reuse", "skip_expert")
KD_TARGETS = ("kv", "hidden")
DTYPES = ("float32", "bfloat16")


class CheckpointError(ValueError):
    """A checkpoint or config file that cannot be loaded (truncated, wrong shapes, unknown format version)."""


@dataclass(frozen=True)
class MoLeConfig:
    """Configuration of the MoLe-VLA policy (SmolVLA body + STAR layer routing + CogKD).

    Args:
        format_version: version of this config's on-disk layout; loading refuses versions it does not know.
        vlm_name: hub id or local folder of a SmolVLM2 checkpoint whose weights (and tokenizer) the backbone
            loads on random init; None builds the backbone from the shape fields below (random weights, built-in
            byte tokenizer, nothing downloaded).
        vision_hidden: SigLIP width. vision_layers: SigLIP depth. vision_heads: SigLIP heads.
        vision_intermediate: SigLIP MLP width. image_size: the size SigLIP's position table was trained for.
        patch_size: SigLIP patch size (pixels).
        input_size: the square size images are resized/padded to before SigLIP. Smaller than `image_size` uses
            SigLIP's variable-resolution position bucketing: the vision pass costs ~(input/image)^2, at the price
            of fewer pixels and nearest-bucket position embeddings. Must be a multiple of patch*scale_factor.
        scale_factor: pixel-shuffle factor of the connector (tokens per image = (input/patch/scale)^2).
        text_hidden, text_heads, text_kv_heads, text_intermediate, vocab_size, rope_theta, rms_norm_eps:
            the Llama-style decoder's shapes.
        text_layers_total: decoder depth of the source VLM (SmolVLM2-500M: 32).
        num_kept_layers: the first N decoder layers kept (SmolVLA keeps 16 of 32); each is a MoLe layer-expert.
        tokenizer_max_length: instruction tokens (padded/truncated), as SmolVLA.
        expert_width_factor: action expert width relative to `text_hidden` (SmolVLA: 0.75).
        expert_intermediate: action expert MLP width.
        self_attn_every_n_layers: expert layer l attends jointly (prefix + actions) when l % n == 0, else it
            cross-attends to the VLM's layer-l K/V (SmolVLA: 2).
        chunk_size: actions per chunk (H). num_steps: Euler steps at inference.
        state_dim, action_dim: the robot's (SO-100: 6 joints, radians). max_state_dim, max_action_dim: padded
            widths the projections use, so one checkpoint serves robots with fewer joints (SmolVLA: 32).
        router_hidden: width of the STAR router's summaries.
        router_use_state: feed the state token to the router's temporal branch (our extension of MoLe).
        default_budget: fraction of kept layers active when a call passes budget=None.
        gumbel_tau: Gumbel noise scale on router logits in training (0 = off, as MoLe's released code).
        skip_mode: what expert layer l reads when VLM layer l is skipped: "project" (that layer's own K/V
            projections of the passed-on hidden state), "reuse" (the last active layer's K/V), "skip_expert"
            (expert layer l is skipped too). See skip.py for the measurement behind the default.
        kd_target: what CogKD distils: "kv" (the per-layer K/V the expert reads) or "hidden" (final hidden states).
        w_flow, w_kd, w_balance: loss weights (MoLe's code: KD 0.5, balance 0.01).
        w_future: weight of an auxiliary loss in which the cognition token predicts the robot state
            `future_horizon` frames ahead (clamped to the episode's end). 0 = off (SmolVLA/MoLe have none). Why it
            exists: the first chunks of a reach toward one of several objects barely differ, so the flow loss gives
            almost no gradient for reading *which* object the instruction names, and a policy learns to reach for
            any of them; where the arm will be seconds later differs by the whole object spacing. Needs no labels
            beyond the dataset's own states.
        future_horizon: frames ahead the auxiliary loss predicts (at 30 fps, 45 = 1.5 s).
        w_env_state: weight of an auxiliary loss in which the cognition token predicts the frame's
            `observation.environment_state` (0 = off; needs a dataset that records one). Why: the sim writes the
            cube centres with the named cube first (SimEnv.environment_state), so the first three values are where
            the instruction's object is: a direct, noise-free target for grounding the instruction in the image,
            where the flow and future-state losses only reach it through the arm's motion.
        env_state_dim: width of the dataset's environment state (the sim's: 9); 0 when w_env_state is 0.
        text_film: modulate every visual token by the instruction (FiLM: scale and shift from the mean text
            embedding, zero-initialised so training starts from the unmodulated model), as RT-1 and BC-Z condition
            their image encoders. Off by default (SmolVLA has none: a pretrained VLM binds words to image regions
            through attention). A from-scratch tiny backbone did not learn that binding from the flow loss: its
            chunks did not depend on which colour the instruction named.
        vision_film: modulate the SigLIP patch embeddings by the instruction (FiLM from the mean text embedding,
            zero-initialised), before the vision layers, as RT-1's FiLM-EfficientNet: the vision layers can then
            compute "is this patch the object named" at the pixel level, where `text_film` only rescales tokens the
            vision tower has already pooled. Off by default (a pretrained VLM binds words to regions by attention).
        ema_decay: teacher EMA decay (0 = the teacher is the live network with every layer active).
        scale_prefix_embeddings: multiply image and text token embeddings by sqrt(text_hidden), as SmolVLA does (from
            pi0), so the prefix tokens enter the decoder at the size SmolVLM2's pretrained layers expect.
        router_input_norm: the router reads RMS-normalised visual/text/state tokens (scale-free inputs); without it
            the sqrt(hidden) prefix scale saturated its softmax and it collapsed onto one layer set (balance loss 2.0).
        dtype: compute dtype at inference ("bfloat16" halves memory traffic; CPU speed depends on AMX/AVX512-BF16).
        quantize_int8: dynamic int8 quantisation of Linear layers at inference (CPU only).
    """

    format_version: int = FORMAT_VERSION
    vlm_name: str | None = None
    # --- vision (SigLIP) + connector
    vision_hidden: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    vision_intermediate: int = 3072
    image_size: int = 512
    patch_size: int = 16
    input_size: int = 512
    scale_factor: int = 4
    # --- text decoder (Llama-style)
    text_hidden: int = 960
    text_heads: int = 15
    text_kv_heads: int = 5
    text_intermediate: int = 2560
    text_layers_total: int = 32
    num_kept_layers: int = 16
    vocab_size: int = 49280
    rope_theta: float = 100000.0
    rms_norm_eps: float = 1e-5
    tokenizer_max_length: int = 48
    # --- action expert (flow matching)
    expert_width_factor: float = 0.75
    expert_intermediate: int = 2048
    self_attn_every_n_layers: int = 2
    chunk_size: int = 50
    num_steps: int = 10
    state_dim: int = 6
    action_dim: int = 6
    max_state_dim: int = 32
    max_action_dim: int = 32
    # --- STAR router (MoLe)
    router_hidden: int = 256
    router_use_state: bool = True
    router_input_norm: bool = True
    default_budget: float = 0.5
    gumbel_tau: float = 0.0
    skip_mode: str = "skip_expert"
    # --- CogKD and loss weights
    kd_target: str = "kv"
    w_flow: float = 1.0
    w_kd: float = 0.5
    w_balance: float = 0.01
    ema_decay: float = 0.0
    w_future: float = 0.0
    future_horizon: int = 45
    w_env_state: float = 0.0
    env_state_dim: int = 0
    # --- prefix
    scale_prefix_embeddings: bool = True
    text_film: bool = False
    vision_film: bool = False
    # --- inference numerics
    dtype: str = "float32"
    quantize_int8: bool = False

    def __post_init__(self) -> None:
        if self.format_version != FORMAT_VERSION:
            raise CheckpointError(
                f"unknown config format_version {self.format_version} (this code reads {FORMAT_VERSION})"
            )
        positive = {
            k: getattr(self, k)
            for k in (
                "vision_hidden",
                "vision_layers",
                "vision_heads",
                "vision_intermediate",
                "image_size",
                "patch_size",
                "input_size",
                "scale_factor",
                "text_hidden",
                "text_heads",
                "text_kv_heads",
                "text_intermediate",
                "text_layers_total",
                "num_kept_layers",
                "vocab_size",
                "tokenizer_max_length",
                "expert_intermediate",
                "self_attn_every_n_layers",
                "chunk_size",
                "num_steps",
                "state_dim",
                "action_dim",
                "router_hidden",
                "future_horizon",
            )
        }
        bad = {k: v for k, v in positive.items() if not (isinstance(v, int) and v > 0)}
        if bad:
            raise ValueError(f"these fields must be positive integers: {bad}")
        if self.num_kept_layers > self.text_layers_total:
            raise ValueError(f"num_kept_layers={self.num_kept_layers} > text_layers_total={self.text_layers_total}")
        if self.vision_hidden % self.vision_heads or self.text_hidden % self.text_heads:
            raise ValueError("hidden sizes must be divisible by their head counts")
        if self.text_heads % self.text_kv_heads:
            raise ValueError(f"text_heads={self.text_heads} not a multiple of text_kv_heads={self.text_kv_heads}")
        if self.input_size % (self.patch_size * self.scale_factor) or self.input_size > self.image_size:
            raise ValueError(
                f"input_size={self.input_size} must be <= image_size={self.image_size} and a multiple of "
                f"patch_size*scale_factor={self.patch_size * self.scale_factor}"
            )
        if self.state_dim > self.max_state_dim or self.action_dim > self.max_action_dim:
            raise ValueError("state_dim/action_dim exceed max_state_dim/max_action_dim")
        if not 0.0 < self.expert_width_factor <= 4.0 or self.expert_hidden % self.text_heads:
            raise ValueError(f"expert width {self.expert_hidden} must be > 0 and divisible by text_heads")
        if not 0.0 < self.default_budget <= 1.0:
            raise ValueError(f"default_budget={self.default_budget} must be in (0, 1]")
        if self.skip_mode not in SKIP_MODES:
            raise ValueError(f"skip_mode={self.skip_mode!r} not in {SKIP_MODES}")
        if self.kd_target not in KD_TARGETS:
            raise ValueError(f"kd_target={self.kd_target!r} not in {KD_TARGETS}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} not in {DTYPES}")
        if not 0.0 <= self.ema_decay < 1.0 or self.gumbel_tau < 0.0:
            raise ValueError("ema_decay must be in [0, 1) and gumbel_tau >= 0")
        if min(self.w_flow, self.w_kd, self.w_balance, self.w_future, self.w_env_state) < 0.0:
            raise ValueError("loss weights must be >= 0")
        if self.env_state_dim < 0 or (self.w_env_state > 0) != (self.env_state_dim > 0):
            raise ValueError(
                f"w_env_state={self.w_env_state} needs env_state_dim > 0 (the dataset's environment state width) "
                f"and env_state_dim={self.env_state_dim} needs w_env_state > 0"
            )

    # --- derived sizes
    @property
    def head_dim(self) -> int:
        return self.text_hidden // self.text_heads

    @property
    def expert_hidden(self) -> int:
        return int(self.text_hidden * self.expert_width_factor)

    @property
    def tokens_per_image(self) -> int:
        return (self.input_size // self.patch_size // self.scale_factor) ** 2

    def num_active(self, budget: float | None) -> int:
        """k = max(1, round(budget * L)) kept layers; raises on a budget outside (0, 1]."""
        budget = self.default_budget if budget is None else float(budget)
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"budget={budget} must be in (0, 1]")
        return max(1, round(budget * self.num_kept_layers))

    # --- presets and serialisation
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MoLeConfig:
        """`smolvlm2-500m` (SmolVLM2-500M shapes, 16 kept layers) or `tiny` (trains on a CPU in seconds)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        return dataclasses.replace(cls(**PRESETS[name]), **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MoLeConfig:
        if data.get("format_version") == 1:  # trained before the SmolVLA embedding scale existed here
            data = {**data, "format_version": 2, "scale_prefix_embeddings": False, "router_input_norm": False}
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise CheckpointError(f"unknown config fields {sorted(unknown)}")
        if data.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"unknown config format_version {data.get('format_version')!r} (this code reads {FORMAT_VERSION})"
            )
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> MoLeConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise CheckpointError(f"config {path} is not a JSON object")
        return cls.from_dict(data)


PRESETS: dict[str, dict[str, Any]] = {
    # The real SmolVLM2-500M shapes, so its checkpoints load; SmolVLA keeps 16 of its 32 decoder layers.
    # input_size 384 (not 512): the vision pass is half the chunk's time on CPU and 384 px costs ~56% of it,
    # giving 36 instead of 64 visual tokens per image (bench/results/policy.json). Pass input_size=512 for SmolVLA's.
    "smolvlm2-500m": {"input_size": 384},
    # Small enough to overfit synthetic data on 2 CPU cores in seconds; same structure as the real one.
    "tiny": {
        "vision_hidden": 32,
        "vision_layers": 2,
        "vision_heads": 2,
        "vision_intermediate": 64,
        "image_size": 64,
        "patch_size": 8,
        "input_size": 64,
        "scale_factor": 2,
        "text_hidden": 48,
        "text_heads": 4,
        "text_kv_heads": 2,
        "text_intermediate": 96,
        "text_layers_total": 8,
        "num_kept_layers": 4,
        "vocab_size": 320,
        "tokenizer_max_length": 40,  # bytes: the longest sim task ("put the yellow cube on the green one") fits
        "expert_intermediate": 64,
        "chunk_size": 8,
        "num_steps": 4,
        "max_state_dim": 8,
        "max_action_dim": 8,
        "router_hidden": 32,
    },
}
