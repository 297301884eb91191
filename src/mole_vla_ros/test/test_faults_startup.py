"""Fault injection at start-up: a broken checkpoint given to the policy node, a broken LeRobot dataset given to
the training CLI. Each fails at once with an error that names the file and the problem (never a half-started
node, never a training run on partial data). The loaders' own unit tests are in test_policy_checkpoint.py and
test_data_lerobot.py; these prove the user-facing entry points pass the reason through.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import rclpy
import torch
from rclpy.parameter import Parameter

from mole_vla_ros import cli
from mole_vla_ros.data.lerobot_dataset import DatasetError, LeRobotDatasetWriter
from mole_vla_ros.nodes.policy_node import PolicyNode, joint_range_stats
from mole_vla_ros.policy import CheckpointError
from mole_vla_ros.policy.testing import tiny_policy
from so100_driver.testing.ros_harness import NodeProcess, wait_until

VIDEO = "videos/observation.images.scene/chunk-000/file-000.mp4"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "good"
    policy = tiny_policy(seed=0)
    policy.set_normalization(joint_range_stats())
    policy.save_pretrained(folder)
    return folder


def _damage_checkpoint(good, tmp_path, damage):
    folder = tmp_path / damage
    shutil.copytree(good, folder)
    cfg = json.loads((folder / "config.json").read_text())
    if damage == "truncated":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 3])
    elif damage == "wrong_shapes":
        (folder / "config.json").write_text(json.dumps({**cfg, "router_hidden": cfg["router_hidden"] * 2}))
    elif damage == "unknown_version":
        (folder / "config.json").write_text(json.dumps({**cfg, "format_version": 99}))
    return folder


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated", "truncated or corrupt"),
        ("wrong_shapes", "wrong shape"),
        ("unknown_version", "format_version"),
    ],
)
def test_policy_node_refuses_a_broken_checkpoint_at_start_up(checkpoint, tmp_path, capfd, damage, message):
    folder = _damage_checkpoint(checkpoint, tmp_path, damage)
    with rclpy.init(), pytest.raises(CheckpointError, match=message):
        PolicyNode(parameter_overrides=[Parameter("checkpoint", value=str(folder))])
    logged = capfd.readouterr().err
    assert f"cannot load the policy from checkpoint '{folder}'" in logged and message in logged, logged[-2000:]


@pytest.mark.dds
def test_policy_node_process_exits_with_the_reason_on_a_truncated_checkpoint(checkpoint, tmp_path):
    folder = _damage_checkpoint(checkpoint, tmp_path, "truncated")
    args = ["--ros-args", "-p", f"checkpoint:={folder}"]
    with NodeProcess("mole_vla_ros.nodes.policy_node", args, name="policy_bad_ckpt") as proc:
        wait_until(lambda: not proc.alive(), 60.0, message=f"the node to exit\n{proc.tail()}")
    log = proc.tail(80)
    assert proc.proc.returncode == 1, log
    assert "[FATAL]" in log and "cannot load the policy" in log and "truncated or corrupt" in log, log
    assert "AttributeError" not in log, log  # the failed start-up is torn down cleanly


# ---- the training CLI ------------------------------------------------------------------------------------


def _dataset(root, frames=(12, 12)):
    rng = np.random.default_rng(0)
    with LeRobotDatasetWriter(root, fps=30, cameras={"scene": (32, 32)}, vcodec="libx264") as writer:
        for episode, n in enumerate(frames):
            for _ in range(n):
                q = rng.uniform(-0.5, 0.5, 6)
                image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                writer.add_frame(q, q + 0.01, {"scene": image}, f"task {episode}")
            writer.save_episode()
    return root


@pytest.mark.parametrize(
    ("damage", "message"),
    [("missing_column", r"missing columns.*action"), ("missing_frames", "missing frames")],
)
def test_train_cli_refuses_a_dataset_with_missing_columns_or_frames(tmp_path, damage, message):
    root = _dataset(tmp_path / "ds")
    if damage == "missing_column":
        table = pq.read_table(root / "data/chunk-000/file-000.parquet")
        pq.write_table(table.drop_columns(["action"]), root / "data/chunk-000/file-000.parquet")
    else:  # the video holds fewer frames than the table says
        short = _dataset(tmp_path / "short", frames=(10,))
        shutil.copy(short / VIDEO, root / VIDEO)
    out = tmp_path / "run"
    argv = ["train", "--dataset", str(root), "--out", str(out), "--steps", "2", "--batch-size", "2"]
    with pytest.raises(DatasetError, match=message):
        cli.main([*argv, "--device", "cpu", "--threads", "1"])
    assert not (out / "final").exists(), "a run on a broken dataset must not leave a policy behind"
