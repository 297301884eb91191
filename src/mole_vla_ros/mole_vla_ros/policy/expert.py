"""Flow-matching action expert (SmolVLA's): a narrower transformer over noisy action tokens, conditioned layer-wise.

Expert layer l reads VLM layer l's keys/values. Layers with l % n == 0 attend jointly over the prefix K/V and the
action tokens' own K/V (causal among actions); the others cross-attend to the prefix K/V re-projected by that expert
layer. Everything that depends only on the prefix (the re-projections) is computed once per chunk in `prepare`, so
the 10 denoising steps only run the action tokens through the layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from .config import MoLeConfig
from .vlm import apply_rope


class ExpertLayer(nn.Module):
    def __init__(self, cfg: MoLeConfig, joint: bool) -> None:
        super().__init__()
        e, hd = cfg.expert_hidden, cfg.head_dim
        kv_width = cfg.text_kv_heads * hd
        self.joint, self.head_dim = joint, hd
        self.input_layernorm = LlamaRMSNorm(e, eps=cfg.rms_norm_eps)
        self.q_proj = nn.Linear(e, cfg.text_heads * hd, bias=False)
        # Joint layers project their own tokens into the VLM's K/V space; cross layers re-project the VLM's K/V.
        self.k_proj = nn.Linear(e if joint else kv_width, kv_width, bias=False)
        self.v_proj = nn.Linear(e if joint else kv_width, kv_width, bias=False)
        self.o_proj = nn.Linear(cfg.text_heads * hd, e, bias=False)
        self.post_attention_layernorm = LlamaRMSNorm(e, eps=cfg.rms_norm_eps)
        self.mlp = SwiGLU(e, cfg.expert_intermediate)

    def prepare(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix K/V (B, Hkv, T, hd) as this layer consumes them (re-projected for cross layers); once per chunk."""
        if self.joint:
            return k, v
        return self._reproject(self.k_proj, k), self._reproject(self.v_proj, v)

    def _reproject(self, proj: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        b, h, t, d = x.shape
        flat = x.transpose(1, 2).reshape(b, t, h * d)
        return proj(flat).view(b, t, h, d).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, prefix_kv: tuple[torch.Tensor, torch.Tensor], rope: tuple, mask: torch.Tensor
    ) -> torch.Tensor:
        """x: (B, H, E) action tokens; mask: (B, 1, H, T [+H]) bool."""
        b, n, _ = x.shape
        normed = self.input_layernorm(x)
        q = self.q_proj(normed).view(b, n, -1, self.head_dim).transpose(1, 2)  # (B, Hq, H, hd)
        k, v = prefix_kv
        if self.joint:
            q = apply_rope(q, rope)
            k_own = self.k_proj(normed).view(b, n, -1, self.head_dim).transpose(1, 2)
            v_own = self.v_proj(normed).view(b, n, -1, self.head_dim).transpose(1, 2)
            k, v = torch.cat([k, apply_rope(k_own, rope)], dim=2), torch.cat([v, v_own], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        x = x + self.o_proj(out.transpose(1, 2).reshape(b, n, -1))
        return x + self.mlp(self.post_attention_layernorm(x))


class SwiGLU(nn.Module):
    """Llama's gated MLP (same parameter names as LlamaMLP)."""

    def __init__(self, width: int, intermediate: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(width, intermediate, bias=False)
        self.up_proj = nn.Linear(width, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class ActionExpert(nn.Module):
    """Velocity field v(x_t, t | prefix K/V) over a chunk of H actions (padded to `max_action_dim`)."""

    def __init__(self, cfg: MoLeConfig, num_layers: int) -> None:
        super().__init__()
        e = cfg.expert_hidden
        self.cfg = cfg
        self.layers = nn.ModuleList(
            [ExpertLayer(cfg, joint=i % cfg.self_attn_every_n_layers == 0) for i in range(num_layers)]
        )
        self.action_in_proj = nn.Linear(cfg.max_action_dim, e)
        self.action_time_mlp_in = nn.Linear(2 * e, e)
        self.action_time_mlp_out = nn.Linear(e, e)
        self.norm = LlamaRMSNorm(e, eps=cfg.rms_norm_eps)
        self.action_out_proj = nn.Linear(e, cfg.max_action_dim)

    def prepare(self, keys: list[torch.Tensor], values: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.prepare(k, v) for layer, k, v in zip(self.layers, keys, values, strict=True)]

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cache: list,
        rope: tuple,
        masks: tuple[torch.Tensor, torch.Tensor],
        gate: torch.Tensor | None,
    ) -> torch.Tensor:
        """x_t: (B, H, A) noisy actions, t: (B,) time; masks = (joint, cross) attention masks; gate as in skip.py."""
        x = self.action_in_proj(x_t)  # (B, H, E)
        time = sinusoidal(t, x.shape[-1]).to(x.dtype).unsqueeze(1).expand_as(x)
        x = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(torch.cat([x, time], dim=-1))))
        joint_mask, cross_mask = masks
        for idx, layer in enumerate(self.layers):
            mask = joint_mask if layer.joint else cross_mask
            if gate is None:
                x = layer(x, cache[idx], rope, mask)
            elif gate.dtype != torch.bool:
                g = gate[:, idx].view(-1, 1, 1)
                x = g * layer(x, cache[idx], rope, mask) + (1 - g) * x
            elif bool(gate[:, idx].all()):
                x = layer(x, cache[idx], rope, mask)
            elif bool(gate[:, idx].any()):
                sel = gate[:, idx].nonzero().squeeze(1)
                kv = (cache[idx][0][sel], cache[idx][1][sel])
                x = x.index_copy(0, sel, layer(x[sel], kv, (rope[0][sel], rope[1][sel]), mask[sel]))
        return self.action_out_proj(self.norm(x))


def sinusoidal(t: torch.Tensor, width: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """SmolVLA's time embedding: (B,) -> (B, width), periods spaced geometrically over [min, max]."""
    fraction = torch.linspace(0.0, 1.0, width // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = (2 * math.pi / period)[None, :] * t.double()[:, None]
    return torch.cat([angle.sin(), angle.cos()], dim=-1).float()


def sample_time(batch: int, device: torch.device | None = None) -> torch.Tensor:
    """t ~ Beta(1.5, 1) squeezed into [0.001, 1] (SmolVLA/pi0: more mass near t = 1, pure noise)."""
    beta = torch.distributions.Beta(torch.tensor(1.5), torch.tensor(1.0))
    return (beta.sample((batch,)) * 0.999 + 0.001).to(device)


def euler_denoise(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor, num_steps: int
) -> torch.Tensor:
    """Integrate dx/dt = v from t = 1 (noise) to t = 0 (actions) with `num_steps` Euler steps."""
    x, dt = noise, -1.0 / num_steps
    for step in range(num_steps):
        t = torch.full((noise.shape[0],), 1.0 + step * dt, device=noise.device)
        x = x + dt * velocity(x, t)
    return x
