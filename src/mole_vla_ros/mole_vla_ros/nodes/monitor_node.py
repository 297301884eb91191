"""MonitorNode: what the policy is doing, for rviz and diagnostics.

- mole/markers (MarkerArray): each chunk's planned end-effector path (forward kinematics of every action to the
  `gripper_tip` frame) and one bar per backbone layer (height = router score, green = ran, grey = skipped);
- /diagnostics: chunk rate, mean inference latency, active layers and budget.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from rclpy.node import Node
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from mole_msgs.msg import ActionChunk, RouterState
from mole_vla_ros import conversions, qos
from so100_driver import params as _params
from so100_driver.node_runner import run

try:  # the SIM helper's kinematics; without it the monitor still shows the router and diagnostics
    from so100_driver.description import forward_kinematics
except ImportError:
    forward_kinematics = None

ACTIVE = ColorRGBA(r=0.1, g=0.8, b=0.2, a=0.9)
SKIPPED = ColorRGBA(r=0.5, g=0.5, b=0.5, a=0.6)
PATH = ColorRGBA(r=0.1, g=0.4, b=1.0, a=1.0)


def end_effector_path(positions: np.ndarray, arm: str) -> np.ndarray:
    """(H, 6) joint positions -> (H, 3) gripper_tip positions in the base frame, m."""
    if forward_kinematics is None:
        raise RuntimeError("so100_driver.description.forward_kinematics is not available")
    return np.array([forward_kinematics(row, arm=arm)["gripper_tip"][:3, 3] for row in positions])


class MonitorNode(Node):
    def __init__(self, **kwargs: object) -> None:
        super().__init__("monitor", **kwargs)
        self.declare_parameters(
            "",
            [
                ("arm_model", "so100", _params.choice("Arm model for kinematics.", ("so100", "so101"), read_only=True)),
                ("frame_id", "base_link", _params.text("Frame of the markers.", read_only=True)),
                ("bar_scale", 0.2, _params.floating("Bar height for a router score of 1, m.", 0.001, 10.0)),
                ("bar_spacing", 0.02, _params.floating("Distance between layer bars, m.", 0.001, 1.0)),
                ("rate_window", 10.0, _params.floating("Window of the chunk-rate estimate, s.", 0.5, 600.0)),
            ],
        )
        self.arm = self.get_parameter("arm_model").value
        self.frame_id = self.get_parameter("frame_id").value
        self._chunk_times: deque[float] = deque(maxlen=1000)
        self._latencies: deque[float] = deque(maxlen=100)
        self._router: RouterState | None = None
        if forward_kinematics is None:
            self.get_logger().warning("forward kinematics unavailable: no chunk path markers")
        self._marker_pub = self.create_publisher(MarkerArray, "mole/markers", qos.RELIABLE)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", qos.RELIABLE)
        self.create_subscription(ActionChunk, "mole/action_chunk", self._on_chunk, qos.RELIABLE)
        self.create_subscription(RouterState, "mole/router_state", self._on_router, qos.RELIABLE)
        self.create_timer(1.0, self._publish_diagnostics)

    def _marker(self, ns: str, marker_id: int, kind: int, color: ColorRGBA) -> Marker:
        marker = Marker(ns=ns, id=marker_id, type=kind, action=Marker.ADD, color=color)
        marker.header.frame_id = self.frame_id
        marker.header.stamp = self.get_clock().now().to_msg()
        marker.pose.orientation.w = 1.0
        return marker

    def _on_chunk(self, msg: ActionChunk) -> None:
        self._chunk_times.append(time.monotonic())
        self._latencies.append(float(msg.inference_latency))
        if forward_kinematics is None:
            return
        try:
            path = end_effector_path(conversions.parse_action_chunk(msg).positions, self.arm)
        except ValueError as err:
            self.get_logger().error(f"chunk {msg.chunk_id} not drawn: {err}", throttle_duration_sec=2.0)
            return
        line = self._marker("chunk_path", 0, Marker.LINE_STRIP, PATH)
        line.scale.x = 0.004
        line.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in path]
        end = self._marker("chunk_path", 1, Marker.SPHERE, PATH)
        end.scale.x = end.scale.y = end.scale.z = 0.015
        end.pose.position = line.points[-1]
        self._marker_pub.publish(MarkerArray(markers=[line, end]))

    def _on_router(self, msg: RouterState) -> None:
        self._router = msg
        scale = self.get_parameter("bar_scale").value
        spacing = self.get_parameter("bar_spacing").value
        bars = []
        for layer, (active, score) in enumerate(zip(msg.active_mask, msg.scores, strict=False)):
            bar = self._marker("router_layers", layer, Marker.CUBE, ACTIVE if active else SKIPPED)
            height = max(float(score) * scale, 0.002)  # a zero-height cube would vanish in rviz
            bar.scale.x, bar.scale.y, bar.scale.z = spacing * 0.8, spacing * 0.8, height
            bar.pose.position.y = layer * spacing
            bar.pose.position.z = height / 2.0
            bars.append(bar)
        self._marker_pub.publish(MarkerArray(markers=bars))

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        window = self.get_parameter("rate_window").value
        recent = [t for t in self._chunk_times if now - t <= window]
        status = DiagnosticStatus(name="mole/policy_monitor", hardware_id="monitor")
        values = {
            "chunk_rate_hz": f"{len(recent) / window:.3f}",
            "mean_latency_s": f"{np.mean(self._latencies):.4f}" if self._latencies else "n/a",
        }
        if self._router is not None:
            values["active_layers"] = f"{self._router.num_active}/{len(self._router.active_mask)}"
            values["budget"] = f"{self._router.budget:.3f}"
            values["flops_fraction"] = f"{self._router.flops_fraction:.3f}"
        if recent:
            status.level, status.message = DiagnosticStatus.OK, "chunks flowing"
        else:
            status.level, status.message = DiagnosticStatus.WARN, f"no chunk in the last {window:.0f} s"
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    return run(MonitorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
