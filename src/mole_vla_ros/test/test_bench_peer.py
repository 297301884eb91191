"""The side-by-side benchmark against LeRobot's SmolVLA: same shapes on both sides, honest pairing and ratios.

The benchmark itself is timed elsewhere (bench/compare_lerobot.py); these tests pin what makes its numbers
comparable: the peer's SmolVLM2-500M config equals our preset's shapes, the model folder it builds offline carries
SmolVLM's special image tokens, the worker protocol survives a bad request, rounds are interleaved and ratios are
paired per round, and the forced "static first-half" cut on our side really keeps layers 0..k-1.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest
import torch

from mole_vla_ros.policy import MoLeConfig
from mole_vla_ros.policy.testing import fixed_noise, tiny_policy

BENCH = Path(__file__).resolve().parents[3] / "bench"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


worker = _load("lerobot_smolvla_worker", BENCH / "peer" / "lerobot_smolvla_worker.py")
compare = _load("compare_lerobot", BENCH / "compare_lerobot.py")


def test_peer_config_has_our_preset_shapes():
    ours = MoLeConfig.preset("smolvlm2-500m")
    vision, text = worker.SMOLVLM2_500M["vision_config"], worker.SMOLVLM2_500M["text_config"]
    pairs = {
        "vision_hidden": vision["hidden_size"],
        "vision_layers": vision["num_hidden_layers"],
        "vision_heads": vision["num_attention_heads"],
        "vision_intermediate": vision["intermediate_size"],
        "image_size": vision["image_size"],
        "patch_size": vision["patch_size"],
        "scale_factor": worker.SMOLVLM2_500M["scale_factor"],
        "text_hidden": text["hidden_size"],
        "text_heads": text["num_attention_heads"],
        "text_kv_heads": text["num_key_value_heads"],
        "text_intermediate": text["intermediate_size"],
        "text_layers_total": text["num_hidden_layers"],
        "vocab_size": text["vocab_size"],
        "rope_theta": text["rope_theta"],
        "head_dim": text["head_dim"],
    }
    assert {k: getattr(ours, k) for k in pairs} == pairs
    # 512 px / patch 16 / pixel shuffle 4 -> SmolVLA's 64 tokens per image.
    assert (vision["image_size"] // vision["patch_size"] // worker.SMOLVLM2_500M["scale_factor"]) ** 2 == 64


def test_model_folder_loads_offline_with_smolvlm_special_tokens(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    folder = worker.write_model_folder(tmp_path / "model")
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "smolvlm"
    assert config.text_config.num_hidden_layers == 32 and config.vision_config.image_size == 512
    tok = AutoTokenizer.from_pretrained(folder)
    # SmolVLA's VLAFlowMatching reads exactly these two attributes.
    assert tok.fake_image_token_id == worker.SPECIAL_TOKENS["<fake_token_around_image>"]
    assert tok.global_image_token_id == worker.SPECIAL_TOKENS["<global-img>"]
    assert len(tok) == worker.SMOLVLM2_500M["text_config"]["vocab_size"]
    enc = tok(["pick up the red cube\n"], padding="max_length", max_length=48, padding_side="right")
    ids, mask = enc["input_ids"][0], enc["attention_mask"][0]
    assert len(ids) == 48 and sum(mask) == len("pick up the red cube\n")  # one token per byte, then padding
    assert tok.decode([i for i, m in zip(ids, mask, strict=True) if m]) == "pick up the red cube\n"


class _FakeVariant:
    layers = 16

    def measure(self, repeats, warmup):
        return [{"total": 1.0 + i} for i in range(repeats)]


def test_worker_protocol_answers_every_line_and_survives_bad_requests(monkeypatch):
    requests = '{"variant": 16, "repeats": 2}\n\n{"variant": 99}\nnot json\n{"variant": 16}\n'
    monkeypatch.setattr(sys, "stdin", io.StringIO(requests))
    out = io.StringIO()
    worker.serve({16: _FakeVariant()}, warmup=0, out=out)
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["ok"] for r in replies] == [True, False, False, True]
    assert [s["total"] for s in replies[0]["samples"]] == [1.0, 2.0]
    assert "KeyError" in replies[1]["error"] and "JSONDecodeError" in replies[2]["error"]


def test_rounds_rotate_so_every_variant_takes_every_position():
    names = ["a", "b", "c"]
    orders = [compare.rotated(names, r) for r in range(3)]
    assert all(sorted(o) == names for o in orders)
    assert {o[0] for o in orders} == set(names)
    calls = []
    samples = compare.run_rounds(
        {n: (lambda n=n: calls.append(n) or {"total": 1.0}) for n in names}, rounds=3, log=lambda m: None
    )
    assert calls == [n for o in orders for n in o]
    assert {n: len(s) for n, s in samples.items()} == {"a": 3, "b": 3, "c": 3}


def _series(totals):
    return [{"total": t, "vision": t / 2, "vlm": t / 10, "expert": t / 4} for t in totals]


def test_ratios_pair_rounds_and_targets_follow_the_brief():
    # Drift: the machine slows down 2x in round 2; paired ratios cancel it, ratios of medians do not here.
    samples = {
        "lerobot-16L": _series([4.0, 8.0, 4.0]),
        "lerobot-8L": _series([2.0, 4.0, 2.0]),
        "ours-100%@512": _series([3.0, 6.0, 3.0]),
        "ours-50%@512": _series([1.6, 3.2, 1.6]),
        "ours-25%@512": _series([1.2, 2.4, 1.2]),
        "ours-static8@512": _series([2.4, 4.8, 2.4]),
    }
    report = compare.build_report(samples, {"ours": {"analytic_gflops": {"ours-50%@512": 170.0}}}, [512])
    r = report["ratios"]
    assert r["ours_50_vs_lerobot_16"]["paired_median"] == pytest.approx(0.4)
    assert r["ours_50_vs_lerobot_8"]["paired_median"] == pytest.approx(0.8)
    assert r["ours_static8_vs_lerobot_8"]["paired_median"] == pytest.approx(1.2)
    assert report["targets"]["ours_50_vs_lerobot_16"]["met"] is True
    assert report["targets"]["ours_50_vs_lerobot_8"]["met"] is True
    assert report["variants"]["lerobot-16L"]["median_s"] == 4.0
    assert report["variants"]["lerobot-16L"]["stages_median_s"]["vision"] == 2.0
    assert report["share_of_peak_fp32"]["ours-50%@512"] == pytest.approx(1 / 1.6)

    samples["ours-50%@512"] = _series([2.2, 4.4, 2.2])  # slower than the static 8-layer peer: target missed
    report = compare.build_report(samples, {}, [512])
    assert report["targets"]["ours_50_vs_lerobot_8"]["met"] is False
    assert report["targets"]["ours_50_vs_lerobot_16"]["met"] is False


def test_ratio_refuses_unpaired_rounds():
    with pytest.raises(ValueError, match="same non-zero number of rounds"):
        compare.ratio({"a": _series([1.0]), "b": _series([1.0, 2.0])}, "a", "b")


def test_static_cut_keeps_the_first_layers_and_restores_the_router():
    torch.manual_seed(0)
    policy = tiny_policy(seed=0).eval()
    obs = {"images": [torch.rand(1, 3, 32, 32)], "instruction": ["pick"], "state": torch.zeros(1, 6)}
    noise = fixed_noise(policy, 1)
    k = policy.config.num_active(0.5)
    with compare.first_layers_forced(policy):
        pred = policy.predict_action_chunk(obs, 0.5, noise)
    assert pred.active_mask[0].tolist() == [True] * k + [False] * (policy.num_layers - k)
    assert "forward" not in vars(policy.router)  # the learned router is back
    sample = compare.our_sample(policy, 0.5, obs, noise, static=True)
    assert set(sample) == {"total", "vision", "vlm", "expert", "other"}
    assert sample["total"] >= sample["vision"] + sample["vlm"] + sample["expert"] > 0
