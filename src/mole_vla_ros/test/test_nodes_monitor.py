"""MonitorNode over real DDS: chunk path through forward kinematics, one bar per layer, diagnostics."""

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from visualization_msgs.msg import MarkerArray

from mole_msgs.msg import ActionChunk, RouterState
from mole_vla_ros import conversions, qos
from mole_vla_ros.nodes.monitor_node import MonitorNode
from so100_driver.description import forward_kinematics
from so100_driver.testing.ros_harness import wait_until

pytestmark = pytest.mark.dds


def test_monitor_draws_the_path_and_router_bars_and_reports():
    with rclpy.init():
        monitor = MonitorNode()
        probe = rclpy.create_node("monitor_probe")
        executor = SingleThreadedExecutor()
        executor.add_node(monitor)
        executor.add_node(probe)
        markers, diagnostics = [], []
        probe.create_subscription(MarkerArray, "mole/markers", markers.append, qos.RELIABLE)
        probe.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, qos.RELIABLE)
        chunk_pub = probe.create_publisher(ActionChunk, "mole/action_chunk", qos.RELIABLE)
        router_pub = probe.create_publisher(RouterState, "mole/router_state", qos.RELIABLE)

        def spin(predicate, message):
            return wait_until(predicate, 10.0, lambda t: executor.spin_once(timeout_sec=t), message)

        spin(lambda: chunk_pub.get_subscription_count() and router_pub.get_subscription_count(), "discovery")
        positions = np.linspace(np.zeros(6), np.full(6, 0.3), 5)
        chunk = conversions.build_action_chunk(positions, conversions.seconds_to_stamp(1.0), fps=30.0)
        chunk.inference_latency = 0.25
        chunk_pub.publish(chunk)
        router_pub.publish(
            RouterState(active_mask=[True, False, True], scores=[0.5, 0.1, 0.4], budget=0.66, num_active=2)
        )
        spin(lambda: len(markers) >= 2, "markers")
        by_ns = {m.ns: m for array in markers for m in array.markers if m.type != m.SPHERE}
        path = by_ns["chunk_path"]
        expected = forward_kinematics(positions[-1])["gripper_tip"][:3, 3]
        assert len(path.points) == 5
        assert [path.points[-1].x, path.points[-1].y, path.points[-1].z] == pytest.approx(expected.tolist())
        bars = [m for array in markers for m in array.markers if m.ns == "router_layers"]
        assert [b.id for b in bars] == [0, 1, 2]
        assert bars[0].scale.z == pytest.approx(0.1) and bars[1].scale.z == pytest.approx(0.02)
        assert bars[0].color.g > bars[0].color.r and bars[1].color.g == bars[1].color.r  # active green, skipped grey
        spin(lambda: any(s.name == "mole/policy_monitor" for d in diagnostics for s in d.status), "diagnostics")
        status = next(s for d in diagnostics for s in d.status if s.name == "mole/policy_monitor")
        values = {kv.key: kv.value for kv in status.values}
        assert values["mean_latency_s"] == "0.2500" and values["active_layers"] == "2/3"
        monitor.destroy_node()
        probe.destroy_node()
