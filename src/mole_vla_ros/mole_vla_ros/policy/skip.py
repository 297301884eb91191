"""The mixture-of-layers loop over the kept decoder layers: skipped layers are identity and are not computed.

At inference the gate is a bool (B, L) mask and a layer's attention and MLP run only for the rows that keep it
(a layer nobody keeps is never called). In training the gate is a float straight-through mask and every layer runs,
so that the router gets a gradient through `g * layer(h) + (1 - g) * h` (MoLe does the same, without the
inference path).

What the action expert reads at a skipped VLM layer l (config `skip_mode`):
- "project": layer l's own K/V projections of the passed-on hidden state. That is exactly what layer l would hand
  the expert anyway (SmolVLA's K/V are projections of a layer's *input*), for two small matmuls per prefix token.
- "reuse": the last computed layer's K/V, no extra compute; the expert's layer l then sees another layer's feature
  space (its re-projections were trained on layer l's), which the measurements show costs accuracy.
- "skip_expert": expert layer l is skipped too. The only option that makes the 10x-repeated denoising loop cheaper,
  which is where CPU time goes (the prefix layers are ~8% of a chunk). DEFAULT. Measured (SmolVLM2-500M shapes,
  CPU, 2 threads, batch 1, machine shared with other jobs, so noisy): expert stage at 50% budget 0.55-0.78 s with
  "skip_expert" vs 1.9-2.4 s with "project" (which keeps all 16 expert layers; 1.2-1.5 s at 100%), i.e. the expert
  time falls with the budget only in this mode. Quality on the synthetic overfit task per mode is in
  bench/results/policy.json (`skip_modes`, `overfit_rel_mse_50`); "project" stays the choice where accuracy at
  low budgets matters more than expert time (its K/V are exact for the hidden state the skipped layer received).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .vlm import SmolVLMBackbone


@dataclass
class PrefixOutput:
    keys: list[torch.Tensor]  # per layer (B, Hkv, T, hd): the K the expert reads (rotary applied)
    values: list[torch.Tensor]  # per layer (B, Hkv, T, hd)
    hidden: torch.Tensor  # (B, T, D) last hidden state
    cog_attention: torch.Tensor | None  # (B, T) cognition token's attention at the last layer (training only)


def run_layers(
    backbone: SmolVLMBackbone,
    hidden: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor],
    mask: torch.Tensor,
    gate: torch.Tensor | None,
    skip_mode: str,
    cog_index: int | None = None,
) -> PrefixOutput:
    """Run the kept layers under `gate`: None = all layers, bool (B, L) = real skipping, float = straight-through."""
    keys: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    cog = None
    last = backbone.num_layers - 1
    for idx in range(backbone.num_layers):
        want_cog = cog_index if idx == last else None
        if gate is None or gate.dtype != torch.bool:
            new, k, v, layer_cog = backbone.layer_forward(idx, hidden, rope, mask, want_cog)
            if gate is None:
                hidden = new
            else:
                g = gate[:, idx].view(-1, 1, 1)
                hidden = g * new + (1 - g) * hidden  # exactly `new` when g == 1
                if skip_mode == "reuse" and keys:
                    g4 = g.unsqueeze(-1)
                    k, v = g4 * k + (1 - g4) * keys[-1], g4 * v + (1 - g4) * values[-1]
            cog = layer_cog if want_cog is not None else cog
        else:
            hidden, k, v = _skip_layer(backbone, idx, hidden, rope, mask, gate[:, idx], skip_mode, keys, values)
        keys.append(k)
        values.append(v)
    return PrefixOutput(keys, values, hidden, cog)


def _skip_layer(
    backbone: SmolVLMBackbone,
    idx: int,
    hidden: torch.Tensor,
    rope: tuple,
    mask: torch.Tensor,
    rows: torch.Tensor,
    skip_mode: str,
    keys: list,
    values: list,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if bool(rows.all()):
        hidden, k, v, _ = backbone.layer_forward(idx, hidden, rope, mask)
        return hidden, k, v
    k, v = _skipped_kv(backbone, idx, hidden, rope, skip_mode, keys, values)
    if bool(rows.any()):
        sel = rows.nonzero().squeeze(1)
        sub_rope = (rope[0][sel], rope[1][sel])
        new, k_sel, v_sel, _ = backbone.layer_forward(idx, hidden[sel], sub_rope, mask[sel])
        hidden = hidden.index_copy(0, sel, new)
        k, v = k.index_copy(0, sel, k_sel), v.index_copy(0, sel, v_sel)
    return hidden, k, v


def _skipped_kv(
    backbone: SmolVLMBackbone, idx: int, hidden: torch.Tensor, rope: tuple, skip_mode: str, keys: list, values: list
) -> tuple[torch.Tensor, torch.Tensor]:
    if skip_mode == "reuse" and keys:
        return keys[-1], values[-1]
    if skip_mode == "skip_expert":
        # The paired expert layer does not run for these rows, so nothing reads these K/V: don't compute them.
        b, t, _ = hidden.shape
        shape = (b, backbone.cfg.text_kv_heads, t, backbone.cfg.head_dim)
        return hidden.new_zeros(shape), hidden.new_zeros(shape)
    return backbone.layer_kv(idx, hidden, rope)
