"""STAR router (MoLe-VLA): picks which kept decoder layers run, once, before layer 0.

As in MoLe's released code: a spatial branch (visual tokens -> shared projection -> mean pool -> 2-layer GELU MLP ->
one logit per layer) and a "temporal" branch (language tokens -> one transformer encoder layer -> masked mean pool ->
linear -> one logit per layer), summed, scaled by a learned sigmoid sharpness from the text summary, softmaxed.
Our extension (config `router_use_state`): the state token joins the temporal branch, so the arm's configuration can
change which layers run. Because the router runs before any layer, the active set and the cost of the call are known
up front: that is what makes real skipping possible.

Training: hard top-k with a straight-through estimator (optional Gumbel noise, off in MoLe's code) plus a
load-balance loss; inference: hard top-k at a budget that may change per call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import MoLeConfig


class STARRouter(nn.Module):
    def __init__(self, cfg: MoLeConfig, num_layers: int) -> None:
        super().__init__()
        d, r = cfg.text_hidden, cfg.router_hidden
        self.proj = nn.Linear(d, r)  # shared by both branches
        self.spatial = nn.Sequential(nn.Linear(r, r), nn.GELU(), nn.Linear(r, num_layers))
        heads = max(1, r // 64) if r % 64 == 0 else 1
        self.temporal_encoder = nn.TransformerEncoderLayer(r, heads, 2 * r, dropout=0.0, batch_first=True)
        self.temporal = nn.Linear(r, num_layers)
        self.sharpness = nn.Linear(r, 1)
        self.use_state = cfg.router_use_state
        self.gumbel_tau = cfg.gumbel_tau
        self.normalize_inputs = cfg.router_input_norm

    def forward(
        self, visual: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, state: torch.Tensor
    ) -> torch.Tensor:
        """Layer probabilities (B, L) from visual (B, V, D), text (B, T, D) with mask (B, T), state token (B, 1, D)."""
        if self.normalize_inputs:
            # The router sees token directions, not their size: the prefix scale (sqrt(hidden)) otherwise makes
            # its logits so large that the softmax saturates and it collapses onto one fixed layer set.
            visual, text, state = (F.rms_norm(x, (x.shape[-1],)) for x in (visual, text, state))
        spatial = self.spatial(self.proj(visual).mean(1))  # (B, L)
        if self.use_state:
            text = torch.cat([text, state], dim=1)
            text_mask = torch.cat([text_mask, text_mask.new_ones(text_mask.shape[0], 1)], dim=1)
        encoded = self.temporal_encoder(self.proj(text), src_key_padding_mask=~text_mask)  # (B, T, r)
        weights = text_mask.unsqueeze(-1).to(encoded.dtype)
        pooled = (encoded * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # (B, r)
        logits = (spatial + self.temporal(pooled)) * torch.sigmoid(self.sharpness(pooled))  # (B, L)
        if self.training and self.gumbel_tau > 0:
            gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp(1e-9, 1 - 1e-9)))
            logits = logits + self.gumbel_tau * gumbel
        return logits.softmax(-1)


def top_k_mask(probs: torch.Tensor, k: int) -> torch.Tensor:
    """Hard top-k as a bool mask (B, L); exactly k True per row."""
    idx = probs.topk(k, dim=-1).indices
    return torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, idx, True)


def straight_through(probs: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """Forward value = the hard 0/1 mask, gradient = that of the probabilities (the router learns through it)."""
    # hard + (p - p.detach()) keeps the value exactly 0/1 (hard + p - p would round), which makes the full-budget
    # training pass bit-identical to the teacher's.
    return hard.to(probs.dtype) + (probs - probs.detach())


def load_balance_loss(probs: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """Switch-style balance: (L / k) * sum_l (share of samples using l) * (mean prob of l); 1.0 when uniform.

    MoLe's code uses mean(mask * probs); scaling by L/k makes the value independent of the budget, and its minimum
    (uniform use) keeps the router from collapsing onto the same layers for every input.
    """
    num_layers, k = probs.shape[-1], hard.sum(-1).float().mean()
    usage = hard.float().mean(0)  # (L,)
    return num_layers / k * (usage * probs.mean(0)).sum()
