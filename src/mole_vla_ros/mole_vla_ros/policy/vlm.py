"""The SmolVLM2-family backbone: SigLIP vision encoder + pixel-shuffle connector + the first N Llama decoder layers.

The modules are `transformers`' own (so a real SmolVLM2 checkpoint loads into them unchanged), but the decoder
layers are driven here, one call per piece, instead of through `LlamaModel.forward`: the router must be able to skip
any layer, and the action expert needs each layer's keys/values, which the stock forward does not hand out.
Attention is `torch.nn.functional.scaled_dot_product_attention` (fused) everywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, SmolVLMConfig
from transformers.models.smolvlm.configuration_smolvlm import SmolVLMVisionConfig
from transformers.models.smolvlm.modeling_smolvlm import SmolVLMForConditionalGeneration, SmolVLMModel

from .config import MoLeConfig


def smolvlm_config(cfg: MoLeConfig) -> SmolVLMConfig:
    """The `transformers` config with `cfg`'s shapes (all `text_layers_total` layers; truncation happens later)."""
    vision = SmolVLMVisionConfig(
        hidden_size=cfg.vision_hidden,
        intermediate_size=cfg.vision_intermediate,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
    )
    text = LlamaConfig(
        hidden_size=cfg.text_hidden,
        intermediate_size=cfg.text_intermediate,
        num_hidden_layers=cfg.num_kept_layers,
        num_attention_heads=cfg.text_heads,
        num_key_value_heads=cfg.text_kv_heads,
        head_dim=cfg.head_dim,
        vocab_size=cfg.vocab_size,
        rope_theta=cfg.rope_theta,
        rms_norm_eps=cfg.rms_norm_eps,
        max_position_embeddings=8192,
    )
    config = SmolVLMConfig(vision_config=vision, text_config=text, scale_factor=cfg.scale_factor)
    config._attn_implementation = "sdpa"
    config.vision_config._attn_implementation = "sdpa"
    config.text_config._attn_implementation = "sdpa"
    return config


class SmolVLMBackbone(nn.Module):
    """Vision encoder, connector and the kept decoder layers, exposed piece by piece for the skip loop."""

    def __init__(self, cfg: MoLeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vlm = SmolVLMModel(smolvlm_config(cfg))
        # The LM head and the final norm are never used: the expert reads per-layer K/V, not logits.
        self.vlm.text_model.norm = nn.Identity()

    @classmethod
    def load_pretrained_weights(cls, module: SmolVLMBackbone, name_or_path: str) -> None:
        """Copy a real SmolVLM2 checkpoint's weights (hub id or local folder) into `module`'s kept layers."""
        source = SmolVLMForConditionalGeneration.from_pretrained(name_or_path, dtype=torch.float32).model
        own = module.vlm.state_dict()
        theirs = {k: v for k, v in source.state_dict().items() if k in own}
        missing = [k for k in own if k not in theirs and not k.startswith("text_model.norm")]
        if missing:
            raise ValueError(f"{name_or_path} lacks {len(missing)} backbone weights, e.g. {missing[:3]}")
        module.vlm.load_state_dict(theirs, strict=False)

    @property
    def layers(self) -> nn.ModuleList:
        return self.vlm.text_model.layers

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def encode_images(
        self, pixels: torch.Tensor, patch_film: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """(N, 3, S, S) in [-1, 1] -> (N, tokens_per_image, D) visual tokens.

        `patch_film` = (gamma, beta), each (N, 1, vision_hidden): the patch embeddings become (1 + gamma) * e + beta
        before the vision layers (FiLM, config.vision_film), so the layers see which patches the instruction is about.
        """
        pixels = pixels.to(self.vlm.connector.modality_projection.proj.weight.dtype)
        vision = self.vlm.vision_model
        if patch_film is None:
            return self.vlm.connector(vision(pixel_values=pixels).last_hidden_state)
        # SmolVLMVisionTransformer.forward with the modulation between its embeddings and its encoder; every patch
        # of a prepared (square, padded) image is real, so no patch attention mask is needed.
        gamma, beta = patch_film
        size = pixels.shape[-1] // vision.patch_size
        every_patch = torch.ones(pixels.shape[0], size, size, dtype=torch.bool, device=pixels.device)
        patches = vision.embeddings(pixel_values=pixels, patch_attention_mask=every_patch)
        hidden = vision.encoder(inputs_embeds=patches * (1.0 + gamma) + beta).last_hidden_state
        return self.vlm.connector(vision.post_layernorm(hidden))

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.vlm.text_model.embed_tokens(ids)  # (B, T, D)

    def rope(self, hidden: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vlm.text_model.rotary_emb(hidden, positions)

    def layer_kv(self, idx: int, hidden: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> tuple:
        """Layer `idx`'s keys/values of `hidden` (its input): (B, Hkv, T, hd) each, rotary applied to keys.

        This is exactly what the full layer would hand the expert, at the cost of two small projections.
        """
        layer = self.layers[idx]
        normed = layer.input_layernorm(hidden)
        return self._kv(layer.self_attn, normed, rope)

    def _kv(self, attn: nn.Module, normed: torch.Tensor, rope: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, _ = normed.shape
        hd = self.cfg.head_dim
        k = attn.k_proj(normed).view(b, t, -1, hd).transpose(1, 2)
        v = attn.v_proj(normed).view(b, t, -1, hd).transpose(1, 2)
        return apply_rope(k, rope), v

    def layer_forward(
        self,
        idx: int,
        hidden: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor,
        cog_index: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One decoder layer. Returns (output hidden, k, v, attention row of token `cog_index` or None).

        mask: (B, 1, T, T) bool, True = may attend. The cognition token's attention row (B, T), averaged over
        heads, is computed on the side because fused SDPA does not return weights.
        """
        layer = self.layers[idx]
        attn = layer.self_attn
        b, t, _ = hidden.shape
        hd = self.cfg.head_dim
        normed = layer.input_layernorm(hidden)
        q = attn.q_proj(normed).view(b, t, -1, hd).transpose(1, 2)  # (B, H, T, hd)
        k, v = self._kv(attn, normed, rope)  # (B, Hkv, T, hd)
        q = apply_rope(q, rope)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)  # (B, H, T, hd)
        hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(b, t, -1))
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        cog = None
        if cog_index is not None:
            cog = cognition_attention(q[:, :, cog_index], k, mask[:, 0, cog_index])
        return hidden, k, v, cog


def cognition_attention(q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """One query per sample over T keys, softmaxed, averaged over heads: (B, H, hd), (B, Hkv, T, hd) -> (B, T)."""
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    logits = torch.einsum("bhd,bhtd->bht", q, k) * q.shape[-1] ** -0.5
    logits = logits.masked_fill(~key_mask[:, None, :], float("-inf"))
    return logits.softmax(-1).mean(1)


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotary embedding (Llama's rotate-half form) on (B, H, T, hd) with cos/sin of shape (B, T, hd)."""
    cos, sin = rope
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)
