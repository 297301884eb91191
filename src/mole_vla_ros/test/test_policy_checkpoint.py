"""Checkpoints (safetensors + JSON config) round-trip exactly; bad ones fail with CheckpointError; no ROS in policy/."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mole_vla_ros.policy as policy_pkg
from mole_vla_ros.policy import CheckpointError, MoLeConfig, MoLePolicy
from mole_vla_ros.policy.testing import fixed_noise, make_batch, tiny_policy


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def saved(tmp_path):
    policy = tiny_policy(seed=3)
    policy.set_normalization(
        {
            "action": {"mean": torch.arange(6.0), "std": torch.full((6,), 0.5)},
            "observation.state": {"mean": torch.zeros(6), "std": torch.full((6,), 2.0)},
        }
    )
    policy.save_pretrained(tmp_path / "ckpt")
    return policy, tmp_path / "ckpt"


def test_round_trip_is_exact(saved):
    policy, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = MoLePolicy.from_pretrained(folder)
    assert loaded.config == policy.config
    for (name, a), (_, b) in zip(policy.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    batch, noise = make_batch(policy, batch=2), fixed_noise(policy, 2)
    torch.testing.assert_close(
        loaded.predict_action_chunk(batch, 0.5, noise).actions,
        policy.predict_action_chunk(batch, 0.5, noise).actions,
        atol=0,
        rtol=0,
    )


def test_config_json_round_trip():
    cfg = MoLeConfig.preset("tiny", skip_mode="project", default_budget=0.75)
    assert MoLeConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_truncated_weights_rejected(saved):
    _, folder = saved
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        MoLePolicy.from_pretrained(folder)


def test_wrong_shapes_rejected(saved):
    _, folder = saved
    cfg = json.loads((folder / "config.json").read_text())
    cfg["router_hidden"] = 16
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="wrong shape"):
        MoLePolicy.from_pretrained(folder)


def test_unknown_format_version_rejected(saved):
    _, folder = saved
    cfg = json.loads((folder / "config.json").read_text())
    cfg["format_version"] = 99
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="format_version"):
        MoLePolicy.from_pretrained(folder)


def test_format_1_checkpoints_load_as_trained_without_the_embedding_scale(saved):
    policy, folder = saved
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["scale_prefix_embeddings"]
    (folder / "config.json").write_text(json.dumps({**cfg, "format_version": 1}))
    loaded = MoLePolicy.from_pretrained(folder)
    assert loaded.config.format_version == 2 and not loaded.config.scale_prefix_embeddings
    batch, noise = make_batch(policy, batch=1), fixed_noise(policy, 1)
    unscaled = loaded.predict_action_chunk(batch, 1.0, noise).actions
    scaled = policy.predict_action_chunk(batch, 1.0, noise).actions
    assert not torch.allclose(unscaled, scaled), "the scale must change what the same weights compute"


def test_unknown_config_field_and_missing_files_rejected(saved, tmp_path):
    _, folder = saved
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "warp_drive": True}))
    with pytest.raises(CheckpointError, match="warp_drive"):
        MoLePolicy.from_pretrained(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"config\.json"):
        MoLePolicy.from_pretrained(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        MoLePolicy.from_pretrained(tmp_path / "nowhere")


def test_policy_package_imports_no_ros():
    root = Path(policy_pkg.__file__).parent
    forbidden = ("rclpy", "rosidl", "launch", "ament")
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                assert top not in forbidden and not top.endswith("_msgs"), f"{path.name} imports {name}"
    code = (
        "import sys, mole_vla_ros.policy as p; p.MoLePolicy(p.MoLeConfig.preset('tiny'));"
        "print([m for m in sys.modules if m.startswith('rclpy') or m.endswith('_msgs')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
