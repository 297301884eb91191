"""CogKD (MoLe-VLA): distil the full-depth network (teacher) into the routed one (student), token by token.

Per token: 0.5 * MSE + 0.5 * reverse KL(student || teacher), the KL over a softmax of the feature dimension, as in
MoLe's code; each token's loss is weighted by the teacher's and the student's cognition-token attention (product,
renormalised over tokens, detached so the weights cannot be gamed to lower the loss).

What is distilled (config `kd_target`): by default "kv", the per-layer keys/values the action expert reads. In a
SmolVLA-style model those are the VLM's only channel to the actions (the final hidden states feed nothing: there is
no LM head and the expert reads each layer's K/V), so distilling them aims the loss at what changes the actions.
"hidden" (final hidden states, MoLe's choice, where the cognition token *is* the action head's input) is kept as an
option for comparison. Exactly zero when student == teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_weights(teacher_attn: torch.Tensor, student_attn: torch.Tensor) -> torch.Tensor:
    """(B, T) cognition-token attentions -> (B, T) weights summing to 1 per sample."""
    w = (teacher_attn * student_attn).detach()
    return w / w.sum(-1, keepdim=True).clamp_min(1e-12)


def per_token_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """(B, T, F) features -> (B, T): 0.5 * MSE + 0.5 * KL(softmax(student) || softmax(teacher))."""
    mse = (student - teacher).pow(2).mean(-1)
    log_s, log_t = F.log_softmax(student, dim=-1), F.log_softmax(teacher, dim=-1)
    reverse_kl = (log_s.exp() * (log_s - log_t)).sum(-1)
    return 0.5 * mse + 0.5 * reverse_kl


def cogkd_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """Mean over feature sets (layers) of the attention-weighted per-token loss; features (B, T, F), weights (B, T)."""
    if len(student) != len(teacher) or not student:
        raise ValueError(f"need matching non-empty feature lists, got {len(student)} and {len(teacher)}")
    losses = [(per_token_loss(s, t.detach()) * weights).sum(-1).mean() for s, t in zip(student, teacher, strict=True)]
    return torch.stack(losses).mean()


def kv_features(keys: list[torch.Tensor], values: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-layer K and V (B, Hkv, T, hd) -> per-layer (B, T, 2 * Hkv * hd) token features."""
    out = []
    for k, v in zip(keys, values, strict=True):
        b, _, t, _ = k.shape
        out.append(torch.cat([k, v], dim=1).transpose(1, 2).reshape(b, t, -1))
    return out
