"""Times LeRobot's own SmolVLA (the peer) on this CPU: SmolVLM2-500M shapes, random weights, nothing downloaded.

Runs under `.venv-lerobot/bin/python` (lerobot 0.6.1 needs Python >= 3.12 and torch < 2.12, so it cannot share a
process with the project's policy; see bench/peer/setup_lerobot.sh). Two ways to use it:

    .venv-lerobot/bin/python bench/peer/lerobot_smolvla_worker.py --layers 16 8 --repeats 5 --json out.json
    .venv-lerobot/bin/python bench/peer/lerobot_smolvla_worker.py --layers 16 8 --serve

`--serve` builds the models once and then answers one JSON line per request line on stdin
(`{"variant": 16, "repeats": 3}`); bench/compare_lerobot.py drives it that way to interleave the peer's rounds
with our policy's, so drift on a shared machine hits both sides alike.

What is built: a local model folder (bench/results/tmp/peer-smolvlm2-500m-random/, git-ignored) holding a
SmolVLM2-500M-Video-Instruct config written here (the shapes of the hub's config.json), a tokenizer made with the
`tokenizers` library (bytes plus SmolVLM's special image tokens at their hub ids, which SmolVLA reads from
`processor.tokenizer`) and the processor configs `AutoProcessor` needs for a SmolVLMProcessor. SmolVLA's
`AutoConfig`/`AutoProcessor` calls read that folder; `load_vlm_weights=False` gives random weights.
Timings are of `SmolVLAPolicy.predict_action_chunk` (one 50-step chunk, 10 Euler steps) at batch 1, split per
stage by wrapping the model's own methods:
vision = `embed_image` (SigLIP + connector), vlm = the prefix pass through the kept VLM layers (fills the KV cache),
expert = the denoising loop (every `denoise_step`), other = the rest (embedding, masks, pre/post-processing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Before torch is imported: no hub traffic, and the thread count the caller asked for.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# --- settings (visible defaults; every one is a command-line flag)
THREADS = 2
REPEATS = 5
WARMUP = 1
IMAGE_SIZE = 512
INSTRUCTION = "pick up the red cube and put it in the box"
SEED = 0
# Generated files go under bench/results/tmp/ (git-ignored).
MODEL_DIR = Path(__file__).resolve().parents[1] / "results" / "tmp" / "peer-smolvlm2-500m-random"

# The hub's HuggingFaceTB/SmolVLM2-500M-Video-Instruct config.json, reduced to the fields that set shapes.
SMOLVLM2_500M = {
    "model_type": "smolvlm",
    "architectures": ["SmolVLMForConditionalGeneration"],
    "scale_factor": 4,  # pixel shuffle: (512/16)^2 = 1024 patches -> 64 tokens per image
    "image_token_id": 49190,
    "tie_word_embeddings": False,
    "vision_config": {
        "model_type": "smolvlm_vision",
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "num_channels": 3,
        "image_size": 512,
        "patch_size": 16,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
    },
    "text_config": {
        "model_type": "llama",
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
        "head_dim": 64,
        "vocab_size": 49280,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 8192,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "pad_token_id": 2,
    },
}
# SmolVLM2's special tokens at their hub ids; SmolVLA reads `fake_image_token_id` and `global_image_token_id`.
SPECIAL_TOKENS = {
    "<|endoftext|>": 0,
    "<|im_start|>": 1,
    "<|im_end|>": 2,
    "<global-img>": 49152,
    "<fake_token_around_image>": 49189,
    "<image>": 49190,
    "<end_of_utterance>": 49279,
}
BYTE_OFFSET = 3  # byte b is token b + 3, after the three text specials


def write_model_folder(folder: Path) -> Path:
    """Config, tokenizer and processor files that `AutoConfig`/`AutoProcessor.from_pretrained(folder)` load offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(SMOLVLM2_500M, indent=2) + "\n")

    # Byte-level vocabulary without merges: every UTF-8 byte is one token, so any instruction tokenises.
    byte_symbols = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: BYTE_OFFSET + i for i, symbol in enumerate(sorted(byte_symbols))}
    vocab.update(SPECIAL_TOKENS)
    # Fill the rest up to the model's vocab size so the ids are contiguous (the hub's SmolLM2 merges are not here).
    used = set(vocab.values())
    vocab.update({f"<|unused_{i}|>": i for i in range(SMOLVLM2_500M["text_config"]["vocab_size"]) if i not in used})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        extra_special_tokens={
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
        model_max_length=8192,
    )
    fast.save_pretrained(folder)

    # Named PIL so the folder loads where torchvision is absent (transformers takes the torchvision one if present).
    image_processor = {
        "image_processor_type": "SmolVLMImageProcessorPil",
        "processor_class": "SmolVLMProcessor",
        "do_resize": True,
        "size": {"longest_edge": IMAGE_SIZE},
        "max_image_size": {"longest_edge": IMAGE_SIZE},
        "do_image_splitting": False,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_pad": True,
        "do_convert_rgb": True,
        "resample": 1,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(image_processor, indent=2) + "\n")
    (folder / "processor_config.json").write_text(
        json.dumps({"processor_class": "SmolVLMProcessor", "image_seq_len": 64}, indent=2) + "\n"
    )
    return folder


def build_policy(model_dir: Path, num_vlm_layers: int, image_size: int, pad_language: str) -> Any:
    """LeRobot's SmolVLAPolicy with its defaults except the VLM folder, the kept depth and random weights."""
    from lerobot.configs import FeatureType, PolicyFeature
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    config = SmolVLAConfig(
        vlm_model_name=str(model_dir),
        load_vlm_weights=False,
        num_vlm_layers=num_vlm_layers,
        resize_imgs_with_padding=(image_size, image_size),
        pad_language_to=pad_language,
        device="cpu",
        input_features={
            "observation.images.camera1": PolicyFeature(type=FeatureType.VISUAL, shape=(3, image_size, image_size)),
            "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(6,)),
        },
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(6,))},
    )
    policy = SmolVLAPolicy(config)
    policy.eval()
    return policy


def make_batch(policy: Any, image_size: int, instruction: str) -> dict[str, Any]:
    """One observation as LeRobot's preprocessor hands it to the policy (tokenised, batch 1)."""
    import torch
    from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

    cfg = policy.config
    tokenizer = policy.model.vlm_with_expert.processor.tokenizer
    # SmolVLA's NewLineTaskProcessorStep appends the newline; TokenizerProcessorStep pads on the right.
    enc = tokenizer(
        [instruction + "\n"],
        padding=cfg.pad_language_to,
        max_length=cfg.tokenizer_max_length,
        truncation=True,
        padding_side="right",
        return_tensors="pt",
    )
    gen = torch.Generator().manual_seed(SEED)
    return {
        "observation.images.camera1": torch.rand(1, 3, image_size, image_size, generator=gen),
        "observation.state": torch.randn(1, 6, generator=gen),
        OBS_LANGUAGE_TOKENS: enc["input_ids"],
        OBS_LANGUAGE_ATTENTION_MASK: enc["attention_mask"].bool(),
    }


class StageTimer:
    """Wraps the model's own methods (instance attributes) to add their wall time to named stages."""

    def __init__(self, policy: Any) -> None:
        self.totals: dict[str, float] = {}
        model = policy.model
        vlm = model.vlm_with_expert
        vlm.embed_image = self._wrap(vlm.embed_image, lambda *a, **k: "vision")
        # The prefix pass is the one call of `forward` without expert tokens (inputs_embeds=[prefix, None]).
        vlm.forward = self._wrap(vlm.forward, lambda *a, **k: "vlm" if k["inputs_embeds"][1] is None else None)
        model.denoise_step = self._wrap(model.denoise_step, lambda *a, **k: "expert")

    def _wrap(self, fn: Callable, stage_of: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            stage = stage_of(*args, **kwargs)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if stage is not None:
                    self.totals[stage] = self.totals.get(stage, 0.0) + time.perf_counter() - start

        return timed

    def take(self) -> dict[str, float]:
        out, self.totals = self.totals, {}
        return out


class Variant:
    """One built SmolVLA (a kept depth) with its batch and stage timer, ready to time."""

    def __init__(self, model_dir: Path, layers: int, image_size: int, pad_language: str, instruction: str) -> None:
        import torch

        torch.manual_seed(SEED)
        start = time.perf_counter()
        self.policy = build_policy(model_dir, layers, image_size, pad_language)
        self.build_s = time.perf_counter() - start
        self.layers = layers
        self.batch = make_batch(self.policy, image_size, instruction)
        self.timer = StageTimer(self.policy)
        vlm = self.policy.model.vlm_with_expert
        self.info = {
            "num_vlm_layers": vlm.num_vlm_layers,
            "num_expert_layers": vlm.num_expert_layers,
            "expert_hidden": vlm.expert_hidden_size,
            "params_m": round(sum(p.numel() for p in self.policy.parameters()) / 1e6, 1),
            "dtype": str(next(self.policy.parameters()).dtype),
            "vision_attn_impl": vlm.get_vlm_model().vision_model.config._attn_implementation,
            "image_size": image_size,
            "image_tokens": (image_size // vlm.config.vision_config.patch_size // vlm.config.scale_factor) ** 2,
            "language_tokens": int(self.batch["observation.language.tokens"].shape[1]),
            "chunk_size": self.policy.config.chunk_size,
            "num_steps": self.policy.config.num_steps,
            "pad_language_to": pad_language,
            "build_s": round(self.build_s, 1),
        }

    def run_once(self) -> dict[str, float]:
        import torch

        self.policy.reset()
        self.timer.take()
        start = time.perf_counter()
        with torch.inference_mode():
            actions = self.policy.predict_action_chunk(dict(self.batch))
        total = time.perf_counter() - start
        if tuple(actions.shape) != (1, self.policy.config.chunk_size, 6) or not torch.isfinite(actions).all():
            raise RuntimeError(f"unexpected action chunk {tuple(actions.shape)}")
        stages = self.timer.take()
        stages["other"] = max(0.0, total - sum(stages.values()))
        return {"total": total, **stages}

    def measure(self, repeats: int, warmup: int) -> list[dict[str, float]]:
        for _ in range(warmup):
            self.run_once()
        return [self.run_once() for _ in range(repeats)]


def summarise(samples: list[dict[str, float]]) -> dict[str, Any]:
    """Median / p10 / p90 of the total, median of each stage (seconds)."""
    totals = sorted(s["total"] for s in samples)

    def pct(q: float) -> float:
        return totals[min(len(totals) - 1, max(0, round(q * (len(totals) - 1))))]

    stages = {k: statistics.median(s.get(k, 0.0) for s in samples) for k in ("vision", "vlm", "expert", "other")}
    return {
        "n": len(samples),
        "median_s": statistics.median(totals),
        "p10_s": pct(0.1),
        "p90_s": pct(0.9),
        "stages_median_s": stages,
        "samples_s": [s["total"] for s in samples],
    }


def environment(threads: int) -> dict[str, Any]:
    import lerobot
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lerobot": lerobot.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "requested_threads": threads,
    }


def serve(variants: dict[int, Variant], warmup: int, out: Any) -> None:
    """One JSON request per stdin line -> one JSON reply per stdout line (protocol for compare_lerobot.py)."""
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            variant = variants[int(req["variant"])]
            samples = variant.measure(int(req.get("repeats", 1)), int(req.get("warmup", 0)))
            reply = {"ok": True, "variant": variant.layers, "samples": samples}
        except Exception as exc:  # a bad request must not kill the models the driver waits on
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[16, 8], help="num_vlm_layers variants to build")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--instruction", default=INSTRUCTION)
    parser.add_argument(
        "--pad-language",
        choices=("longest", "max_length"),
        default="max_length",
        help="max_length pads to 48 tokens like our policy; longest is LeRobot's default",
    )
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--json", type=Path, help="write the summary here (standalone mode)")
    parser.add_argument("--serve", action="store_true", help="answer JSON requests on stdin (driver mode)")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.warmup < 0 or args.image_size % 64:
        parser.error("threads and repeats must be >= 1, warmup >= 0, image size a multiple of 64")

    import torch

    torch.set_num_threads(args.threads)
    # Everything the driver reads is on stdout; LeRobot's and transformers' prints go to stderr.
    out, sys.stdout = sys.stdout, sys.stderr
    write_model_folder(args.model_dir)
    variants = {
        n: Variant(args.model_dir, n, args.image_size, args.pad_language, args.instruction) for n in args.layers
    }
    for v in variants.values():
        v.run_once()  # warm-up outside any timed request: first-call allocations and lazy init
    header = {"ready": True, "env": environment(args.threads), "variants": {n: v.info for n, v in variants.items()}}
    if args.serve:
        out.write(json.dumps(header) + "\n")
        out.flush()
        serve(variants, args.warmup, out)
        return 0
    results = dict(header)
    results["results"] = {n: summarise(v.measure(args.repeats, args.warmup)) for n, v in variants.items()}
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    out.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
