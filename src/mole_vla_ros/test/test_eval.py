"""`mole-vla eval`: seeded sim episodes per layer mode, the table it writes, the Wilson interval, forced layer sets."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from mole_vla_ros.policy import MoLeConfig, MoLePolicy
from mole_vla_ros.train import evaluate
from mole_vla_ros.train.checkpoint import write_policy_folder
from mole_vla_ros.train.rollout import layer_mode, observation_batch, wilson_interval

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained tiny policy saved as a training run would save it (cameras and image size in dataset.json)."""
    torch.manual_seed(0)
    policy = MoLePolicy(MoLeConfig.preset("tiny"))
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    meta = {"dataset": {"cameras": ["scene"], "fps": 30.0, "image_hw": [32, 32], "tasks": ["pick up the red cube"]}}
    write_policy_folder(folder, policy, meta)
    return folder


def test_eval_runs_seeded_episodes_and_writes_the_table(checkpoint, tmp_path):
    out = tmp_path / "eval"
    argv = [
        "--checkpoint",
        str(checkpoint),
        "--episodes",
        "2",
        "--seed",
        "5",
        "--mode",
        "full,mole,static,random",
        "--budget",
        "0.5",
        "--time-limit",
        "0.5",
        "--out",
        str(out),
    ]
    assert evaluate.main(argv) == 0
    rows = list(csv.DictReader((out / "eval.csv").read_text().splitlines()))
    assert [(r["mode"], float(r["budget"])) for r in rows] == [
        ("full", 1.0),
        ("mole", 0.5),
        ("static", 0.5),
        ("random", 0.5),
    ]
    by_mode = {r["mode"]: r for r in rows}
    assert float(by_mode["full"]["mean_active_layers"]) == 4.0
    for mode in ("mole", "static", "random"):
        assert float(by_mode[mode]["mean_active_layers"]) == 2.0
        assert float(by_mode[mode]["gflops_per_chunk"]) < float(by_mode["full"]["gflops_per_chunk"])
    for r in rows:
        assert int(r["episodes"]) == 2 and float(r["latency_ms_mean"]) > 0
        assert float(r["ci_low"]) <= float(r["success_rate"]) <= float(r["ci_high"])
    episodes = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert [e["seed"] for e in episodes if e["mode"] == "full"] == [5, 6]
    # Same seeds in every row: the same instructions (and cube layouts) are asked of each mode.
    per_mode = {m: [e["instruction"] for e in episodes if e["mode"] == m] for m in ("full", "mole", "static")}
    assert per_mode["full"] == per_mode["mole"] == per_mode["static"]
    assert "| full |" in (out / "eval.md").read_text() and (out / "eval.png").stat().st_size > 0

    assert evaluate.main([*argv[:-1], str(out), "--append", "--mode", "full", "--label", "again"]) == 0
    assert len(json.loads((out / "eval.json").read_text())["rows"]) == 5


def test_eval_refuses_unknown_modes_and_budgets(checkpoint, tmp_path):
    for bad in (["--mode", "half"], ["--budget", "1.5"], ["--episodes", "0"]):
        with pytest.raises(SystemExit):
            evaluate.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path), *bad])


def test_static_forces_the_first_layers_and_random_varies_with_the_seed():
    policy = MoLePolicy(MoLeConfig.preset("tiny")).eval()
    batch = {
        "images": [torch.rand(3, 3, 32, 32)],
        "instruction": ["pick up the red cube"] * 3,
        "state": torch.zeros(3, 6),
    }
    calls = []
    policy.router.register_forward_hook(lambda *_: calls.append(1))
    static = layer_mode(policy, "static", 0.5)
    pred = policy.predict_action_chunk(batch, **static.kwargs(3))
    assert pred.active_mask.tolist() == [[True, True, False, False]] * 3
    assert not calls  # a forced mask does not run the router
    random = layer_mode(policy, "random", 0.5, seed=1)
    masks = [tuple(policy.predict_action_chunk(batch, **random.kwargs(3)).active_mask[0].tolist()) for _ in range(12)]
    assert len(set(masks)) > 1 and all(sum(m) == 2 for m in masks)
    again = layer_mode(policy, "random", 0.5, seed=1)  # same seed, same draws: rows are reproducible
    assert masks == [tuple(again.kwargs(3)["active_mask"][0].tolist()) for _ in range(12)]
    assert layer_mode(policy, "full", 0.25).kwargs(1) == {"budget": 1.0}
    assert layer_mode(policy, "mole", 0.25).kwargs(1) == {"budget": 0.25}
    with pytest.raises(ValueError, match="unknown mode"):
        layer_mode(policy, "oracle", 0.5)


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(40, 50)  # p = 0.8, n = 50
    assert low == pytest.approx(0.6696, abs=1e-3) and high == pytest.approx(0.8876, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(5, 10)
    assert math.isclose(low + high, 1.0, abs_tol=1e-12)


def test_observation_batch_names_a_missing_camera():
    obs = {"images": {"scene": torch.zeros(8, 8, 3, dtype=torch.uint8).numpy()}, "state": [0.0] * 6}
    batch = observation_batch(obs, ["scene"], "pick up the red cube", torch.device("cpu"))
    assert batch["images"][0].shape == (1, 3, 8, 8) and batch["state"].shape == (1, 6)
    with pytest.raises(ValueError, match="wrist"):
        observation_batch(obs, ["scene", "wrist"], "x", torch.device("cpu"))


SHIPPED = evaluate.DEFAULT_CHECKPOINT


@pytest.mark.slow
@pytest.mark.skipif(not (SHIPPED / "eval.json").is_file(), reason="no shipped default checkpoint with an eval card")
def test_shipped_checkpoint_reaches_the_success_rate_on_its_card():
    """A fresh run on the card's first seeds must be statistically consistent with the card's MoLe 0.5 row:
    the card's rate lies inside this run's Wilson 95% interval."""
    card = json.loads((SHIPPED / "eval.json").read_text())
    row = next(r for r in card["rows"] if r["mode"] == "mole" and r["budget"] == 0.5)
    episodes = 12
    rows, _ = evaluate.evaluate(SHIPPED, episodes, card["seed"], ["pick"], ["mole"], [0.5], progress=False)
    low, high = wilson_interval(rows[0]["successes"], episodes)
    assert low <= row["success_rate"] <= high, (rows[0]["successes"], episodes, row["success_rate"])


def test_heldout_action_error_is_reproducible_and_excludes_padded_steps():
    from mole_vla_ros.train.data import synthetic_dataset
    from mole_vla_ros.train.rollout import heldout_action_error

    data = synthetic_dataset(episodes=2, frames=3, size=32)  # chunks of 8 from 3-frame episodes: mostly padding
    policy = MoLePolicy(MoLeConfig.preset("tiny")).eval()
    mole = layer_mode(policy, "mole", 0.5)
    first = heldout_action_error(policy, data, mole, stride=len(data), seed=0)  # frame 0 only
    assert heldout_action_error(policy, data, mole, stride=len(data), seed=0) == first
    torch.manual_seed(0)
    batch = data.batch([0], policy.config.chunk_size)
    pred = policy.predict_action_chunk(batch, budget=0.5).actions
    assert batch["action_is_pad"][0].tolist() == [False] * 3 + [True] * 5
    by_hand = float(((pred[0, :3] - batch["action"][0, :3]) ** 2).mean())  # the 3 real steps only
    assert first == pytest.approx(by_hand, rel=1e-5)
