"""Analytic FLOPs of one chunk, per component and per layer budget (a multiply-add counts 2).

FLOPs saved are not time saved (FlexiDepth): every speed claim in this project is a wall-clock measurement
(bench/bench_policy.py); these numbers say where time *should* go and how close each stage runs to the CPU's peak.
"""

from __future__ import annotations

from .config import MoLeConfig


def prefix_tokens(cfg: MoLeConfig, num_cameras: int = 1) -> int:
    """Images, instruction tokens, the state token and the cognition token."""
    return num_cameras * cfg.tokens_per_image + cfg.tokenizer_max_length + 2


def vision_flops(cfg: MoLeConfig, num_cameras: int = 1) -> float:
    n, d, i = (cfg.input_size // cfg.patch_size) ** 2, cfg.vision_hidden, cfg.vision_intermediate
    patch = n * 3 * cfg.patch_size**2 * d
    layer = 4 * n * d * d + 2 * n * n * d + 2 * n * d * i
    connector = cfg.tokens_per_image * d * cfg.scale_factor**2 * cfg.text_hidden
    return 2.0 * num_cameras * (patch + cfg.vision_layers * layer + connector)


def llm_layer_flops(cfg: MoLeConfig, tokens: int) -> float:
    d = cfg.text_hidden
    q_o = 2 * tokens * d * d
    attention = 2 * tokens * tokens * cfg.text_heads * cfg.head_dim
    mlp = 3 * tokens * d * cfg.text_intermediate
    return 2.0 * (q_o + kv_flops_tokens(cfg, tokens) / 2 + attention + mlp)


def kv_flops_tokens(cfg: MoLeConfig, tokens: int) -> float:
    """K and V projections of `tokens` tokens (what a skipped layer costs in "project" mode)."""
    return 2.0 * 2 * tokens * cfg.text_hidden * cfg.text_kv_heads * cfg.head_dim


def expert_layer_flops(cfg: MoLeConfig, tokens: int, joint: bool) -> float:
    """One expert layer, one denoising step, over the chunk's H action tokens attending to `tokens` prefix tokens."""
    n, e, qw, kv = cfg.chunk_size, cfg.expert_hidden, cfg.text_heads * cfg.head_dim, cfg.text_kv_heads * cfg.head_dim
    keys = tokens + n if joint else tokens
    own_kv = 2 * n * e * kv if joint else 0
    return 2.0 * (2 * n * e * qw + own_kv + 2 * n * keys * qw + 3 * n * e * cfg.expert_intermediate)


def chunk_flops(cfg: MoLeConfig, budget: float | None = 1.0, num_cameras: int = 1) -> dict[str, float]:
    """FLOPs of one predict_action_chunk at `budget`, assuming the router keeps the cheapest-to-reason-about layers
    (all layers cost the same except joint vs cross expert layers; the estimate uses the mean expert layer)."""
    t = prefix_tokens(cfg, num_cameras)
    layers = cfg.num_kept_layers
    k = cfg.num_active(budget)
    llm = k * llm_layer_flops(cfg, t)
    if cfg.skip_mode == "project":
        llm += (layers - k) * kv_flops_tokens(cfg, t)
    n_joint = sum(1 for i in range(layers) if i % cfg.self_attn_every_n_layers == 0)
    mean_expert = n_joint * expert_layer_flops(cfg, t, True) + (layers - n_joint) * expert_layer_flops(cfg, t, False)
    mean_expert /= layers
    expert_layers = k if cfg.skip_mode == "skip_expert" else layers
    kv = cfg.text_kv_heads * cfg.head_dim
    prepare = 2.0 * 2 * t * kv * kv * (layers - n_joint)  # cross-layer re-projections, once per chunk
    expert = cfg.num_steps * expert_layers * mean_expert + prepare
    vision = vision_flops(cfg, num_cameras)
    return {"vision": vision, "llm": llm, "expert": expert, "total": vision + llm + expert}
