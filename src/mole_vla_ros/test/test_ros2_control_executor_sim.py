"""The executor's JointTrajectory stream (ros2_control's `<controller>/joint_trajectory`) drives the simulated arm
over real DDS: stale points (injected inference latency) are dropped so the arm never moves backwards in time, and
with `collision_check:=true` a chunk into the table is rejected (diagnostics name the step and the links) while the
arm holds."""

import contextlib
import importlib.util

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from mole_msgs.msg import ActionChunk
from mole_vla_ros import conversions, qos
from so100_driver.arm_node import JOINT_STATES_QOS
from so100_driver.joints import JOINT_NAMES
from so100_driver.testing.ros_harness import NodeProcess, wait_until

pytestmark = pytest.mark.dds

EXECUTOR = "mole_vla_ros.nodes.chunk_executor_node"
FPS = 30.0
PAN, LIFT = 0, 1
TOPIC = "joint_trajectory_controller/joint_trajectory"


class Rig:
    def __init__(self):
        self.node = rclpy.create_node("ros2_control_probe")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.states, self.trajectories, self.diagnostics = [], [], []
        self.node.create_subscription(JointState, "joint_states", self._on_state, JOINT_STATES_QOS)
        self.node.create_subscription(JointTrajectory, TOPIC, self.trajectories.append, qos.RELIABLE)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, qos.RELIABLE)
        self.chunk_pub = self.node.create_publisher(ActionChunk, "mole/action_chunk", qos.RELIABLE)

    def _on_state(self, msg):
        by_name = dict(zip(msg.name, msg.position, strict=True))
        self.states.append(np.array([by_name[n] for n in JOINT_NAMES]))

    def spin_until(self, predicate, timeout, message):
        return wait_until(predicate, timeout, lambda t: self.executor.spin_once(timeout_sec=t), message)

    def now(self):
        return self.node.get_clock().now().nanoseconds * 1e-9

    def send(self, positions, stamp, chunk_id):
        stamp_msg = conversions.seconds_to_stamp(stamp)
        self.chunk_pub.publish(conversions.build_action_chunk(positions, stamp_msg, fps=FPS, chunk_id=chunk_id))

    @contextlib.contextmanager
    def executor_process(self, *params):
        # Wall-clock stale drop: this checks that points overtaken by latency are dropped, which the default
        # (executed steps) skips for a chunk observed while the arm held still (it replays from its arrival).
        args = ["--ros-args", "-p", "output_mode:=trajectory", "-p", "hold_timeout:=30.0"]
        args += ["-p", "stale_clock:=wall"]
        for p in params:
            args += ["-p", p]
        before = self.chunk_pub.get_subscription_count()
        with NodeProcess(EXECUTOR, args, name="executor") as proc:
            self.spin_until(lambda: self.chunk_pub.get_subscription_count() > before, 60, "executor up")
            yield proc
        # The next test's executor must be the only one: wait until this one has left the graph.
        self.spin_until(lambda: self.chunk_pub.get_subscription_count() <= before, 30, "executor gone")

    def near(self, target, joints, tol):
        return bool(self.states) and np.all(np.abs(self.states[-1][joints] - target[joints]) < tol)


@pytest.fixture(scope="module")
def rig():
    args = ["--ros-args", "-p", "camera_fps:=0.0", "-p", "seed:=1"]
    with NodeProcess("so100_driver.sim.sim_node", args, name="sim") as sim, rclpy.init():
        r = Rig()
        r.spin_until(lambda: len(r.states) > 3, 60, f"sim joint_states\n{sim.tail()}")
        yield r
        r.node.destroy_node()


def test_trajectory_stream_drives_the_sim_arm_and_stale_points_are_dropped(rig):
    with rig.executor_process("trajectory_points:=10"):
        start = rig.states[-1].copy()
        target = start.copy()
        target[PAN] = start[PAN] + 0.6
        positions = np.linspace(start, target, 45)  # 1.5 s of chunk at 30 fps
        # The observation is 0.5 s old when the chunk arrives: its first ~15 points are in the past.
        rig.trajectories.clear()
        first_state = len(rig.states)
        rig.send(positions, rig.now() - 0.5, chunk_id=1)
        rig.spin_until(lambda: rig.near(target, [PAN], 0.02), 15, "arm at the chunk's end")
        first = rig.trajectories[0]
        assert list(first.joint_names) == list(JOINT_NAMES)
        assert first.points[0].positions[PAN] >= positions[14, PAN] - 1e-9  # stale points never reached the arm
        for msg in rig.trajectories:
            times = [conversions.duration_to_seconds(p.time_from_start) for p in msg.points]
            assert times[0] > 0 and times == sorted(times)
        # The arm went one way only: no step back toward where the stale points were.
        pan = np.array([s[PAN] for s in rig.states[first_state:]])
        assert np.all(np.diff(pan) > -0.005), np.diff(pan).min()
        assert pan[-1] - pan[0] > 0.5


def test_colliding_chunk_is_rejected_with_step_and_links_and_the_arm_holds(rig):
    with rig.executor_process("collision_check:=true") as proc:
        start = rig.states[-1].copy()
        free_target = start.copy()
        free_target[PAN] = 0.3
        rig.send(np.linspace(start, free_target, 30), rig.now(), chunk_id=1)
        rig.spin_until(lambda: rig.near(free_target, [PAN], 0.02), 15, "free chunk executed")
        held = rig.states[-1].copy()

        into_table = np.array([0.3, 0.6, 0.3, 0.7, 0.0, 0.6])  # the jaws 5 cm below the table top
        rig.diagnostics.clear()
        rig.trajectories.clear()
        rig.send(np.linspace(held, into_table, 40), rig.now(), chunk_id=2)

        def rejection():
            for msg in rig.diagnostics:
                for status in msg.status:
                    if status.name == "mole/chunk_executor" and "collision" in status.message:
                        return status.message
            return None

        try:
            message = rig.spin_until(rejection, 10, "collision rejection")
        except TimeoutError as err:
            raise AssertionError(f"{err}\n{proc.tail()}") from None
        assert "chunk 2 rejected" in message and "step " in message
        assert "table" in message and ("gripper_link" in message or "jaw_link" in message)
        # The arm holds: a second of joint states and every command sent stay where the free chunk ended.
        count = len(rig.states)
        rig.spin_until(lambda: len(rig.states) > count + 40, 10, "joint states while holding")
        lifts = np.array([s[LIFT] for s in rig.states[count:]])
        assert np.all(np.abs(lifts - held[LIFT]) < 0.02)
        for msg in rig.trajectories:
            for point in msg.points:
                assert abs(point.positions[LIFT] - held[LIFT]) < 0.02
        assert "collision" in proc.tail()


def test_collision_checker_follows_arm_model_and_a_missing_moveit_is_a_clear_start_error(rig):
    # In-process nodes in the rig's rclpy context.
    from rclpy.parameter import Parameter

    from mole_vla_ros.nodes.chunk_executor_node import ChunkExecutorNode

    overrides = [Parameter("collision_check", value=True), Parameter("arm_model", value="so101")]
    node = ChunkExecutorNode(parameter_overrides=overrides)
    try:
        assert node.checker is not None and node.checker.model.arm == "so101"
    finally:
        node.destroy_node()
    off = ChunkExecutorNode()
    try:
        assert off.checker is None  # off by default: no cost for users who do not ask for it
    finally:
        off.destroy_node()
    if importlib.util.find_spec("moveit") is None:
        overrides = [Parameter("collision_check", value=True), Parameter("collision_checker", value="moveit")]
        with pytest.raises(RuntimeError, match="moveit_py"):
            ChunkExecutorNode(parameter_overrides=overrides)
