"""The GPU fast path of MoLePolicy inference: bf16 weights and the denoising loop captured, layer skipping kept.

What a chunk costs (DESIGN.md §4): the vision pass, the prefix through the active VLM layers, then `num_steps`
Euler steps of the action expert over H action tokens. Already in the plain path and kept here:
- fused attention: every attention is `F.scaled_dot_product_attention` (SmolVLM's layers run with "sdpa", the
  expert calls it directly): flash / memory-efficient kernels on CUDA;
- the prefix keys/values are computed once per chunk (`ActionExpert.prepare`), the denoising steps only run the
  H action tokens;
- a skipped layer is not computed at all (skip.py, and the expert's own loop for `skip_expert`).
What `enable_fast_path` adds:
- bf16 weights on a GPU with bf16 support: half the memory traffic; the normaliser stays fp32 so actions come
  back in radians at full precision;
- each expert layer compiled on its own (`nn.Module.compile`), with CUDA graphs (`mode="reduce-overhead"`) on a
  GPU: at batch 1 a denoising step is dozens of small kernels, launch-bound, and a graph replays them in one
  launch. Layers are compiled one by one, not the expert as a whole, because which layers run is decided per chunk
  by the router: the Python loop that skips a layer stays eager, so skipped layers still cost nothing and the
  compiled graphs of the layers that do run are reused whatever the mask.

CPU stays on the plain fp32 path by default (this CPU has no bf16 matmul units; the int8 path is
`MoLePolicy.quantize_int8_`). `compile="default"` (inductor) runs on CPU too; the tests use it to check that the
compiled layers compute what the eager ones do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .policy import MoLePolicy

WEIGHTS = ("auto", "fp32", "bf16")
COMPILE_MODES = ("auto", "off", "default", "reduce-overhead")


@dataclass(frozen=True)
class FastPath:
    """What `enable_fast_path` chose, with the reason for each choice (for logs and the benchmark record)."""

    device: torch.device
    weights: torch.dtype
    compile: str  # "off", "default" (inductor) or "reduce-overhead" (inductor + CUDA graphs)
    reasons: tuple[str, ...]


def choose(device: str = "auto", weights: str = "auto", compile: str = "auto") -> FastPath:
    """The fast-path settings for `device` ("auto", "cpu", "cuda", "cuda:N"), without touching a policy."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r} not in {WEIGHTS}")
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile={compile!r} not in {COMPILE_MODES}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: the fast path knows cpu and cuda")
    gpu = dev.type == "cuda"
    reasons = []
    if weights == "auto":
        bf16 = gpu and torch.cuda.is_bf16_supported()
        weights = "bf16" if bf16 else "fp32"
        reasons.append("bf16 weights: GPU with bf16 support" if bf16 else "fp32 weights: no bf16 GPU")
    if compile == "auto":
        compile = "reduce-overhead" if gpu else "off"
        reasons.append(
            "expert layers compiled with CUDA graphs: batch-1 denoising steps are kernel-launch bound"
            if gpu
            else "no compile on CPU: compiling costs tens of seconds at start-up for kernels that are compute bound"
        )
    if compile == "reduce-overhead" and not gpu:
        raise ValueError("compile='reduce-overhead' captures CUDA graphs: it needs a CUDA device")
    dtype = torch.bfloat16 if weights == "bf16" else torch.float32
    return FastPath(dev, dtype, compile, tuple(reasons))


def enable_fast_path(
    policy: MoLePolicy, device: str = "auto", weights: str = "auto", compile: str = "auto"
) -> FastPath:
    """Move `policy` (in place) onto the fast path chosen by `choose`; inference-only afterwards.

    `predict_action_chunk` keeps its contract: same inputs, actions in fp32 radians, the same layers skipped.
    """
    if getattr(policy, "_quantized", False):
        raise ValueError("an int8-quantised policy is a CPU path; load the float checkpoint for the fast path")
    plan = choose(device, weights, compile)
    policy.eval().requires_grad_(False)
    policy.to(plan.device)
    if plan.weights != torch.float32:
        for child in policy.children():
            if child is not policy.normalizer:  # mean/std in bf16 would shift every action by up to 0.4%
                child.to(plan.weights)
        policy.cognition.data = policy.cognition.data.to(plan.weights)
    if plan.compile != "off":
        policy.trim_text_padding = False  # one prefix length: instruction lengths would otherwise recompile the layers
        for layer in policy.expert.layers:
            layer.compile(mode=plan.compile, dynamic=False)
    return plan
