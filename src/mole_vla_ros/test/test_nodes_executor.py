"""ChunkExecutorNode over real DDS: streams a chunk at the control rate, asks for the next, drops stale points,
holds on a bad chunk; runtime parameters are validated."""

import math
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory

from mole_msgs.msg import ActionChunk
from mole_vla_ros import conversions, qos
from mole_vla_ros.nodes.chunk_executor_node import ChunkExecutorNode
from so100_driver.testing.ros_harness import NodeProcess, wait_until

pytestmark = pytest.mark.dds

MODULE = "mole_vla_ros.nodes.chunk_executor_node"
FPS = 30.0


def _chunk_positions(h=30):
    # Row i has every joint at 0.01 * i: a command tells which action it came from.
    return np.repeat((0.01 * np.arange(h))[:, None], 6, axis=1)


class Probe:
    """A test node that feeds chunks and records what the executor sends."""

    def __init__(self, name):
        self.node = rclpy.create_node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.commands, self.trajectories, self.requests, self.diagnostics = [], [], [], []
        self.node.create_subscription(JointState, "joint_command", self._on_command, qos.RELIABLE)
        self.node.create_subscription(
            JointTrajectory, "joint_trajectory_controller/joint_trajectory", self.trajectories.append, qos.RELIABLE
        )
        self.node.create_subscription(Header, "mole/chunk_request", self._on_request, qos.RELIABLE)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, qos.RELIABLE)
        self.chunk_pub = self.node.create_publisher(ActionChunk, "mole/action_chunk", qos.RELIABLE)

    def _on_command(self, msg):
        self.commands.append((time.monotonic(), msg))

    def _on_request(self, msg):
        self.requests.append((time.monotonic(), msg))

    def spin_until(self, predicate, timeout, message):
        return wait_until(predicate, timeout, lambda t: self.executor.spin_once(timeout_sec=t), message)

    def spin_for(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)

    def now(self):
        return self.node.get_clock().now().nanoseconds * 1e-9

    def send_chunk(self, positions, stamp, chunk_id=0):
        msg = conversions.build_action_chunk(positions, conversions.seconds_to_stamp(stamp), fps=FPS, chunk_id=chunk_id)
        self.chunk_pub.publish(msg)


def test_executor_streams_at_the_control_rate_requests_the_next_chunk_and_holds():
    with NodeProcess(MODULE, ["--ros-args", "-p", "control_rate:=50.0"]) as proc, rclpy.init():
        probe = Probe("executor_probe")
        probe.spin_until(lambda: probe.requests, 20.0, f"first chunk request\n{proc.tail()}")
        probe.spin_until(lambda: probe.chunk_pub.get_subscription_count() > 0, 10.0, "executor subscription")
        positions = _chunk_positions(30)  # 1 s of actions at 30 fps
        sent_at = time.monotonic()
        probe.send_chunk(positions, probe.now())
        probe.spin_until(lambda: len(probe.commands) >= 10, 5.0, f"commands\n{proc.tail()}")
        # The next request comes once fewer than half the chunk remain: after ~0.5 s, well before the end.
        requests_before = len([r for r in probe.requests if r[0] < sent_at])
        probe.spin_until(lambda: len(probe.requests) > requests_before, 3.0, "request for the next chunk")
        asked_after = probe.requests[requests_before][0] - sent_at
        assert 0.35 < asked_after < 0.8, asked_after
        probe.spin_for(1.2)  # run past the chunk's end into holding

        stamps = np.array([conversions.stamp_to_seconds(m.header.stamp) for _, m in probe.commands])
        periods = np.diff(stamps)
        assert np.median(periods) == pytest.approx(0.02, abs=0.003)
        values = np.array([m.position[0] for _, m in probe.commands])
        assert list(probe.commands[0][1].name) == list(conversions.JOINT_NAMES)
        # Every command is one of the chunk's actions, in order, and the last one is held.
        assert np.all(np.isin(np.round(values, 6), np.round(positions[:, 0], 6)))
        assert np.all(np.diff(values) >= -1e-9)
        assert values[-1] == pytest.approx(positions[-1, 0])
        assert values[-5:] == pytest.approx([positions[-1, 0]] * 5)

        # A chunk with NaN is refused: the arm keeps holding, diagnostics say why.
        bad = _chunk_positions(10)
        bad[3, 2] = math.nan
        count = len(probe.commands)
        probe.send_chunk(bad, probe.now(), chunk_id=7)
        probe.spin_until(
            lambda: any(
                s.level == DiagnosticStatus.ERROR and "non-finite" in s.message
                for d in probe.diagnostics
                for s in d.status
            ),
            5.0,
            "error diagnostics",
        )
        later = np.array([m.position[0] for _, m in probe.commands[count:]])
        assert later.size and np.all(later == pytest.approx(positions[-1, 0]))
        assert "chunk 7 rejected" in proc.tail(200)
        probe.node.destroy_node()
    assert proc.proc.returncode in (0, -2), proc.tail()


def test_trajectory_output_drops_points_overtaken_by_latency():
    # Wall-clock stale drop: the first chunk's overtaken points are dropped as while streaming (the default counts
    # executed steps and replays them from its arrival, the arm having held still; test_execution_chunk_queue).
    args = ["--ros-args", "-p", "output_mode:=trajectory", "-p", "trajectory_points:=5"]
    args += ["-p", "stale_clock:=wall"]
    with NodeProcess(MODULE, args) as proc, rclpy.init():
        probe = Probe("trajectory_probe")
        probe.spin_until(lambda: probe.chunk_pub.get_subscription_count() > 0, 20.0, f"executor\n{proc.tail()}")
        probe.spin_until(lambda: probe.requests, 10.0, "first chunk request")
        positions = _chunk_positions(30)
        # The observation is 0.5 s old when the chunk arrives: its first ~15 actions are already in the past.
        probe.send_chunk(positions, probe.now() - 0.5)
        probe.spin_until(lambda: probe.trajectories, 5.0, f"trajectory\n{proc.tail()}")
        first = probe.trajectories[0]
        assert list(first.joint_names) == list(conversions.JOINT_NAMES)
        assert len(first.points) == 5
        times = [conversions.duration_to_seconds(p.time_from_start) for p in first.points]
        assert all(t > 0 for t in times) and times == sorted(times)
        assert np.diff(times) == pytest.approx([1 / FPS] * 4, abs=1e-6)
        assert first.points[0].positions[0] >= positions[14, 0] - 1e-9
        probe.node.destroy_node()


def test_gripper_goes_to_its_own_controller_when_asked():
    """A ros2_control stack runs the arm and the gripper on two JointTrajectoryControllers."""
    args = ["--ros-args", "-p", "output_mode:=trajectory", "-p", "trajectory_points:=3"]
    args += ["-p", "gripper_trajectory_topic:=gripper_controller/joint_trajectory"]
    with NodeProcess(MODULE, args) as proc, rclpy.init():
        probe = Probe("gripper_probe")
        grippers = []
        probe.node.create_subscription(
            JointTrajectory, "gripper_controller/joint_trajectory", grippers.append, qos.RELIABLE
        )
        probe.spin_until(lambda: probe.chunk_pub.get_subscription_count() > 0, 20.0, f"executor\n{proc.tail()}")
        positions = _chunk_positions(30)
        positions[:, 5] = 0.7  # the gripper column is recognisable
        probe.send_chunk(positions, probe.now())
        probe.spin_until(lambda: probe.trajectories and grippers, 5.0, f"both trajectories\n{proc.tail()}")
        arm, gripper = probe.trajectories[0], grippers[0]
        assert list(arm.joint_names) == list(conversions.JOINT_NAMES[:5])
        assert list(gripper.joint_names) == ["gripper"]
        assert all(len(p.positions) == 5 for p in arm.points)
        assert [p.positions[0] for p in gripper.points] == pytest.approx([0.7] * len(gripper.points))
        assert [p.time_from_start for p in arm.points] == [p.time_from_start for p in gripper.points]
        probe.node.destroy_node()


def test_runtime_parameters_are_validated():
    with rclpy.init():
        node = ChunkExecutorNode()
        try:
            bad = node.set_parameters([Parameter("blend_mode", value="median")])[0]
            assert not bad.successful and "median" in bad.reason
            bad_names = node.set_parameters([Parameter("joint_names", value=["a", "a", "b", "c", "d", "e"])])[0]
            assert not bad_names.successful and "distinct" in bad_names.reason
            out_of_range = node.set_parameters([Parameter("threshold", value=1.5)])[0]
            assert not out_of_range.successful
            assert not node.set_parameters([Parameter("stale_clock", value="sundial")])[0].successful
            latency = [Parameter("threshold_mode", value="latency"), Parameter("stale_clock", value="wall")]
            assert all(r.successful for r in node.set_parameters(latency))
            assert node.queue.config.threshold_mode.value == "latency" and node.queue.config.stale_clock.value == "wall"
            ok = node.set_parameters([Parameter("blend_mode", value="average"), Parameter("mode", value="sync")])
            assert all(r.successful for r in ok)
            assert node.queue.config.blend_mode.value == "average" and node.queue.config.mode.value == "sync"
            assert node.set_parameters([Parameter("hold_timeout", value=5.0)])[0].successful
            assert node.params.hold_timeout == 5.0
        finally:
            node.destroy_node()


def test_stream_stops_after_hold_timeout_when_no_chunk_comes():
    args = ["--ros-args", "-p", "hold_timeout:=0.3"]
    with NodeProcess(MODULE, args) as proc, rclpy.init():
        probe = Probe("hold_probe")
        probe.spin_until(lambda: probe.chunk_pub.get_subscription_count() > 0, 20.0, f"executor\n{proc.tail()}")
        probe.spin_until(lambda: probe.requests, 10.0, "first chunk request")
        probe.send_chunk(_chunk_positions(6), probe.now())  # 0.2 s of actions: the policy then goes silent
        probe.spin_until(lambda: probe.commands, 5.0, "commands")
        probe.spin_for(1.2)
        last = probe.commands[-1][0]
        # Streaming ran through the chunk (0.2 s) plus the hold timeout (0.3 s), then stopped.
        stream = last - probe.commands[0][0]
        assert 0.4 < stream < 0.8, stream
        assert time.monotonic() - last > 0.4
        assert probe.commands[-1][1].position[0] == pytest.approx(0.05)
        # Requests keep coming (once per request_timeout) so a policy that comes back is heard.
        assert len(probe.requests) >= 2
        probe.node.destroy_node()
