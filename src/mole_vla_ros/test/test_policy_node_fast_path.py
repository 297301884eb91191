"""The policy node's `fast_path` parameter: on CUDA the loaded policy goes onto policy/fast_path.py's path; on a
CPU the node warns and runs the plain path, and still serves chunks."""

import sys
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
from rclpy.parameter import Parameter

from mole_vla_ros import conversions
from mole_vla_ros.nodes.policy_node import apply_fast_path, inference_threads
from mole_vla_ros.policy.testing import tiny_policy
from so100_driver.testing.ros_harness import wait_until

sys.path.insert(0, str(Path(__file__).parent))  # pytest runs with --import-mode=importlib: no test dir on the path
from test_nodes_policy import Graph


class RecordingLogger:
    def __init__(self):
        self.warnings, self.infos = [], []

    def warning(self, text):
        self.warnings.append(text)

    def info(self, text):
        self.infos.append(text)


def test_on_cpu_the_fast_path_warns_and_leaves_the_policy_as_it_is():
    policy, logger = tiny_policy(seed=0), RecordingLogger()
    before = {name: value.clone() for name, value in policy.state_dict().items()}
    assert apply_fast_path(policy, "cpu", logger) is False
    assert len(logger.warnings) == 1 and "CUDA-only" in logger.warnings[0] and "plain path" in logger.warnings[0]
    for name, value in policy.state_dict().items():
        assert value.dtype == before[name].dtype and torch.equal(value, before[name]), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: the fast path is GPU-only")
def test_on_cuda_the_fast_path_takes_bf16_weights():
    policy, logger = tiny_policy(seed=0), RecordingLogger()
    assert apply_fast_path(policy, "cuda", logger) is True and not logger.warnings
    assert next(policy.expert.layers[0].parameters()).dtype == torch.bfloat16
    assert policy.normalizer.action_mean.dtype == torch.float32


def test_auto_threads_are_one_for_a_small_model_on_a_cpu_only():
    assert inference_threads(0, "cpu", gflops_per_chunk=0.02, default=16) == 1
    assert inference_threads(0, "cpu", gflops_per_chunk=300.0, default=16) == 16  # a SmolVLM2-500M backbone
    assert inference_threads(0, "cuda:0", gflops_per_chunk=0.02, default=16) == 16
    assert inference_threads(3, "cpu", gflops_per_chunk=0.02, default=16) == 3  # as the user set it


@pytest.mark.dds
def test_the_node_with_fast_path_true_on_cpu_still_produces_chunks():
    torch.set_num_threads(2)  # the node's auto choice for the tiny model it loads must bring this to 1
    params = [Parameter("fast_path", value=True), Parameter("chunk_size", value=8), Parameter("num_steps", value=2)]
    with rclpy.init():
        graph = Graph(None, params)
        try:
            assert graph.node.get_parameter("fast_path").value is True
            assert graph.node.fast_path_active is False  # device cpu: the plain path
            assert graph.node.torch_threads == 1 and torch.get_num_threads() == 1
            graph.send_goal("pick up the red cube", layer_budget=0.5, time_limit=60.0)
            wait_until(lambda: graph.chunks, 60.0, message="a chunk from the tiny policy with fast_path true on cpu")
            parsed = conversions.parse_action_chunk(graph.chunks[0])
            assert parsed.positions.shape == (8, 6) and np.all(np.isfinite(parsed.positions))
        finally:
            graph.close()
