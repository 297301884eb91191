"""Inputs into model space and back: state/action normalisation, image resize/pad, instruction tokenisation.

Normalisation statistics live in buffers of `Normalizer`, so they are saved in `model.safetensors` beside the weights
and can never be separated from the checkpoint that was trained with them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import MoLeConfig


class Normalizer(nn.Module):
    """Mean/std normalisation of "observation.state" and "action" (LeRobot's stats dict layout), and of
    "observation.environment_state" when the policy learns it (config.env_state_dim > 0)."""

    KEYS = {"observation.state": "state", "action": "action", "observation.environment_state": "env_state"}

    def __init__(self, cfg: MoLeConfig) -> None:
        super().__init__()
        self.keys = {k: v for k, v in self.KEYS.items() if v != "env_state" or cfg.env_state_dim > 0}
        dims = {"state": cfg.state_dim, "action": cfg.action_dim, "env_state": cfg.env_state_dim}
        for name in self.keys.values():
            self.register_buffer(f"{name}_mean", torch.zeros(dims[name]))
            self.register_buffer(f"{name}_std", torch.ones(dims[name]))

    def set_stats(self, stats: dict[str, dict[str, object]]) -> None:
        unknown = set(stats) - set(self.KEYS)
        if unknown:
            raise ValueError(f"unknown stats keys {sorted(unknown)}; expected some of {sorted(self.KEYS)}")
        for key, name in self.keys.items():
            if key not in stats:
                continue
            for field in ("mean", "std"):
                if field not in stats[key]:
                    raise ValueError(f"stats[{key!r}] lacks {field!r}")
                value = torch.as_tensor(stats[key][field], dtype=torch.float32).flatten()
                target = getattr(self, f"{name}_{field}")
                if value.shape != target.shape or not torch.isfinite(value).all():
                    raise ValueError(f"stats[{key!r}][{field!r}] must be {tuple(target.shape)} finite, got {value}")
                if field == "std" and (value <= 0).any():
                    raise ValueError(f"stats[{key!r}]['std'] must be > 0, got {value}")
                target.copy_(value)

    def state(self, state: torch.Tensor) -> torch.Tensor:
        return (state - self.state_mean) / self.state_std

    def env_state(self, env_state: torch.Tensor) -> torch.Tensor:
        return (env_state - self.env_state_mean) / self.env_state_std

    def action(self, action: torch.Tensor) -> torch.Tensor:
        return (action - self.action_mean) / self.action_std

    def unaction(self, action: torch.Tensor) -> torch.Tensor:
        return action * self.action_std + self.action_mean


def pad_last(x: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad the last dimension to `width` (SmolVLA pads state/actions to 32 so robots can share a model)."""
    return F.pad(x, (0, width - x.shape[-1]))


def prepare_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 3, size, size) in [-1, 1]: resize keeping aspect, pad left/top (as SmolVLA)."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W) float tensors, got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"images must be float in [0, 1], got dtype {image.dtype}")
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    if (new_h, new_w) != (h, w):
        image = F.interpolate(image, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    image = image.clamp(0.0, 1.0) * 2.0 - 1.0
    return F.pad(image, (size - new_w, 0, size - new_h, 0), value=-1.0)


class ByteTokenizer:
    """UTF-8 bytes as tokens (ids 3..258; 0 = pad): for configs built in code, so nothing is downloaded."""

    PAD, OFFSET = 0, 3

    def __init__(self, vocab_size: int) -> None:
        if vocab_size < 256 + self.OFFSET:
            raise ValueError(f"the byte tokenizer needs vocab_size >= {256 + self.OFFSET}, got {vocab_size}")

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(texts), max_length), self.PAD, dtype=torch.long)
        for row, text in enumerate(texts):
            data = list(text.encode("utf-8"))[:max_length]
            ids[row, : len(data)] = torch.tensor(data, dtype=torch.long) + self.OFFSET
        return ids, ids != self.PAD


class HubTokenizer:
    """The checkpoint's own tokenizer (a real SmolVLM2), padded/truncated to a fixed length."""

    def __init__(self, name_or_path: str) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        return out["input_ids"], out["attention_mask"].bool()


def make_tokenizer(cfg: MoLeConfig) -> ByteTokenizer | HubTokenizer:
    return HubTokenizer(cfg.vlm_name) if cfg.vlm_name else ByteTokenizer(cfg.vocab_size)


def tokenize(tokenizer: ByteTokenizer | HubTokenizer, instructions: list[str], max_length: int) -> tuple:
    """SmolVLA appends a newline to the task; ids (B, T) long and mask (B, T) bool."""
    if not isinstance(instructions, list | tuple) or not all(isinstance(s, str) for s in instructions):
        raise ValueError(f"instruction must be a list of str, got {type(instructions).__name__}")
    return tokenizer([s if s.endswith("\n") else s + "\n" for s in instructions], max_length)
