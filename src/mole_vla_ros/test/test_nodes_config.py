"""The shipped YAML files load into the nodes: every key is a declared parameter and passes its checks."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import rclpy
import yaml

from mole_vla_ros.nodes.camera_node import CameraNode
from mole_vla_ros.nodes.chunk_executor_node import ChunkExecutorNode
from mole_vla_ros.nodes.monitor_node import MonitorNode
from mole_vla_ros.nodes.policy_node import PolicyNode
from so100_driver.joints import JOINT_NAMES

CONFIG = Path(__file__).resolve().parents[3] / "config"


@pytest.mark.parametrize(
    ("file", "node_cls"),
    [("executor.yaml", ChunkExecutorNode), ("camera.yaml", CameraNode), ("monitor.yaml", MonitorNode)],
)
def test_yaml_parameters_are_declared_and_accepted(file, node_cls):
    ((name, body),) = yaml.safe_load((CONFIG / file).read_text()).items()
    params = body["ros__parameters"]
    with rclpy.init(args=["--ros-args", "--params-file", str(CONFIG / file)]):
        node = node_cls()
        try:
            assert node.get_name() == name
            for key, value in params.items():
                assert node.has_parameter(key), f"{file}: {key} is not a parameter of {name}"
                assert node.get_parameter(key).value == value
        finally:
            node.destroy_node()


def test_policy_yaml_loads_into_the_policy_node():
    file = CONFIG / "policy.yaml"
    params = yaml.safe_load(file.read_text())["policy_node"]["ros__parameters"]
    with rclpy.init(args=["--ros-args", "--params-file", str(file)]):
        node = PolicyNode(policy=SimpleNamespace(num_layers=4))  # the model itself is not needed to check params
        try:
            for key, value in params.items():
                assert node.get_parameter(key).value == value, key
        finally:
            node.destroy_node()


def test_executor_yaml_names_joints_in_table_order():
    executor = yaml.safe_load((CONFIG / "executor.yaml").read_text())["chunk_executor"]["ros__parameters"]
    assert tuple(executor["joint_names"]) == JOINT_NAMES
