"""Fault injection on the model side, over real DDS: the chunk executor runs in its own process and streams to a
stand-in arm (joint_states = the last command); the policy node runs a scripted test-double policy.

- the model returns inf, or actions far outside the joint limits;
- inference gets slower than the chunk horizon (by the wall clock every action of a chunk is past on arrival);
- the policy node process is killed (SIGKILL) while the executor is streaming, then started again.

In each: no command outside the limits ever reaches the arm, consecutive commands never jump, the arm ends holding
still, the executor stays up and says why in /diagnostics (and the goal's result says why where a goal can end).

Run as a script (`python test_faults_policy.py DELAY`), this file is a policy node with the scripted policy: the
kill test needs the policy in a process of its own.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import rclpy
import torch
from action_msgs.msg import GoalStatus
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image, JointState

from mole_msgs.action import ExecuteInstruction
from mole_msgs.msg import ActionChunk
from mole_vla_ros import conversions, qos
from mole_vla_ros.execution.chunk_queue import POLICY_CLAMP_MARGIN
from mole_vla_ros.nodes.policy_node import PolicyNode
from so100_driver.executors import HandoffMultiThreadedExecutor
from so100_driver.joints import JOINT_NAMES, SO100_JOINTS
from so100_driver.testing.ros_harness import NodeProcess, wait_until

pytestmark = pytest.mark.dds

EXECUTOR = "mole_vla_ros.nodes.chunk_executor_node"
LOWER = np.array([j.lower for j in SO100_JOINTS])
UPPER = np.array([j.upper for j in SO100_JOINTS])
START = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.2])
TARGET = np.array([0.6, -0.5, 0.7, 0.4, -0.6, 1.0])
CHUNK = 10  # actions per chunk at 30 fps: a 0.33 s horizon
STEP = 0.004  # rad per action: the scripted policy's own largest step
# rad between two consecutive commands: the executor's own cap, the fastest joint's velocity cap (3 rad/s) over one
# 50 Hz control period; a new plan far from the last command is approached at that speed, never jumped to.
MAX_JUMP = max(j.max_velocity for j in SO100_JOINTS) / 50.0 + 1e-9


class ScriptedPolicy:
    """The policy facade with known outputs: from the observed state, CHUNK actions that ramp towards TARGET by
    STEP per action, after `delay` s of "inference". `corrupt` injects a model fault into every chunk."""

    num_layers = 4

    def __init__(self, delay: float = 0.03) -> None:
        self.delay = delay
        self.corrupt: str | None = None
        self.calls = 0
        self.config = SimpleNamespace(chunk_size=CHUNK)

    def reset(self) -> None:
        pass

    def predict_action_chunk(self, batch, budget=0.5):
        state = batch["state"][0].double().numpy()
        time.sleep(self.delay)
        self.calls += 1
        steps = np.arange(1, CHUNK + 1)[:, None] * STEP
        actions = state + np.clip(TARGET - state, -steps, steps)
        if self.corrupt == "inf":
            actions[4, 2] = np.inf
        elif self.corrupt == "out_of_limits":
            # Past the policy node's clamp margin (a broken model, not an overshoot) and the executor's tolerance.
            actions[:, 0] = UPPER[0] + POLICY_CLAMP_MARGIN + 0.5
        elif self.corrupt == "overshoot":  # a trained policy squeezing the jaws past their stop
            actions[:, 5] = LOWER[5] - 0.6
        mask = torch.tensor([[True, False, True, False]])
        return SimpleNamespace(
            actions=torch.as_tensor(actions, dtype=torch.float32)[None],
            active_mask=mask,
            scores=torch.full((1, 4), 0.25),
            flops_fraction=0.5,
            timings={},
        )


class Arm:
    """The probe: a stand-in arm that goes where it is commanded, a camera, and recorders; an action client."""

    def __init__(self, policy_node: PolicyNode | None = None) -> None:
        self.node = rclpy.create_node("fault_probe")
        self.position = START.copy()
        self.commands: list[tuple[float, np.ndarray]] = []
        self.diagnostics: list[tuple[float, dict[str, str], str, int]] = []
        self.chunks: list[ActionChunk] = []
        self._lock = threading.Lock()
        n = self.node
        # Deep queue: every command is checked, and a busy test process must not lose some (KEEP_LAST would drop
        # the oldest, which reads as the arm jumping).
        n.create_subscription(JointState, "joint_command", self._on_command, qos.RECORD_STREAM)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, qos.RELIABLE)
        n.create_subscription(ActionChunk, "mole/action_chunk", self.chunks.append, qos.RELIABLE)
        self.joint_pub = n.create_publisher(JointState, "/joint_states", qos.RELIABLE)
        self.image_pub = n.create_publisher(Image, "camera/scene/image_raw", qos.SENSOR_DATA)
        self.client = ActionClient(n, ExecuteInstruction, "/mole/execute_instruction")
        n.create_timer(0.02, self._publish_state)
        # Threads only for an in-process policy node (its goal loop blocks): one thread is the cheapest way to
        # time the stand-in arm.
        self.executor = SingleThreadedExecutor() if policy_node is None else HandoffMultiThreadedExecutor(num_threads=4)
        self.executor.add_node(n)
        if policy_node is not None:
            self.executor.add_node(policy_node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_command(self, msg: JointState) -> None:
        positions = conversions.joint_state_to_positions(msg)
        with self._lock:
            self.position = positions
            self.commands.append((time.monotonic(), positions))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == "mole/chunk_executor":
                values = {kv.key: kv.value for kv in status.values}
                self.diagnostics.append((time.monotonic(), values, status.message, int.from_bytes(status.level)))

    def _publish_state(self) -> None:
        stamp = self.node.get_clock().now().to_msg()
        with self._lock:
            position = self.position.copy()
        self.joint_pub.publish(conversions.positions_to_joint_state(position, JOINT_NAMES, stamp))
        image = conversions.numpy_to_image(np.full((24, 32, 3), 90, np.uint8), "rgb8", stamp, "camera")
        self.image_pub.publish(image)

    def command_array(self, since: float = 0.0) -> np.ndarray:
        with self._lock:
            rows = [p for t, p in self.commands if t >= since]
        return np.array(rows).reshape(-1, 6)

    def send_goal(self, instruction: str = "pick up the red cube", time_limit: float = 60.0, attempts: int = 1):
        """Send a goal; `attempts` > 1 retries unanswered requests, as a client must after a server restart (the
        dead server's discovery entry outlives it, so wait_for_server can return before the new one matched)."""
        goal = ExecuteInstruction.Goal(instruction=instruction, time_limit=time_limit)
        for attempt in range(attempts):
            assert self.client.wait_for_server(timeout_sec=30.0), "no action server"
            future = self.client.send_goal_async(goal)
            try:
                wait_until(future.done, 10.0 if attempt == attempts - 1 else 3.0, message="goal response")
                break
            except TimeoutError:
                if attempt == attempts - 1:
                    raise
        handle = future.result()
        assert handle.accepted
        return handle, handle.get_result_async()

    def moved(self, since: float, by: float) -> bool:
        commands = self.command_array(since)
        return len(commands) > 1 and np.abs(commands[-1] - commands[0]).max() > by

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()


def assert_safe_stream(commands: np.ndarray) -> None:
    """Every command inside the joint limits; no two consecutive commands further apart than MAX_JUMP."""
    assert len(commands), "no command reached the arm"
    assert np.all(commands >= LOWER - 1e-9) and np.all(commands <= UPPER + 1e-9), "a command outside the limits"
    if len(commands) > 1:
        jump = np.abs(np.diff(commands, axis=0)).max()
        assert jump <= MAX_JUMP, f"consecutive commands jump by {jump:.3f} rad"


def executor_process(hold_timeout: float = 1.0) -> NodeProcess:
    return NodeProcess(EXECUTOR, ["--ros-args", "-p", f"hold_timeout:={hold_timeout}"], name="executor")


@pytest.fixture
def rig():
    """Executor process + in-process policy node (scripted policy) + the stand-in arm."""
    with executor_process() as executor, rclpy.init():
        policy = ScriptedPolicy()
        node = PolicyNode(policy=policy)
        arm = Arm(node)
        try:
            yield SimpleNamespace(arm=arm, policy=policy, node=node, executor=executor)
        finally:
            node.stop()
            time.sleep(0.2)  # the running goal's execute callback returns its result while the executor spins
            arm.close()
            node.destroy_node()
        assert executor.alive(), executor.tail()


def _last_diag(arm: Arm, since: float):
    entries = [d for d in arm.diagnostics if d[0] >= since]
    return entries[-1] if entries else None


def test_inf_actions_abort_the_goal_and_never_reach_the_arm(rig):
    arm, policy = rig.arm, rig.policy
    _, first = arm.send_goal()
    wait_until(lambda: arm.moved(0.0, 0.02), 20.0, message=f"the arm to move\n{rig.executor.tail()}")
    policy.corrupt = "inf"
    chunks_before = len(arm.chunks)
    wrapped = wait_until(lambda: first.done() and first.result(), 10.0, message="the goal to abort")
    assert wrapped.status == GoalStatus.STATUS_ABORTED
    assert "non-finite" in wrapped.result.reason, wrapped.result.reason
    assert len(arm.chunks) <= chunks_before + 1  # at most one good chunk was already on its way
    stopped = time.monotonic()
    time.sleep(2.0)  # hold_timeout (1 s) and a diagnostics period: the stream has ended on the last good command
    late = arm.command_array(stopped + 0.8)  # the last good chunk spans 0.33 s, plus delivery under load
    assert_safe_stream(arm.command_array())
    assert len(late) == 0 or np.ptp(late, axis=0).max() == 0.0, "the arm kept moving after the goal aborted"
    assert rig.executor.alive() and all(np.isfinite(arm.command_array()).ravel())


def test_out_of_limit_chunks_are_rejected_the_arm_holds_and_recovers(rig):
    arm, policy = rig.arm, rig.policy
    arm.send_goal()
    wait_until(lambda: arm.moved(0.0, 0.02), 20.0, message=f"the arm to move\n{rig.executor.tail()}")
    policy.corrupt = "out_of_limits"
    corrupted = time.monotonic()
    error = wait_until(
        lambda: next((d for d in arm.diagnostics if d[0] > corrupted and d[3] == 2), None),
        10.0,
        message="an ERROR diagnostic from the executor",
    )
    assert "outside its limits" in error[2] and "shoulder_pan" in error[2], error[2]
    assert int(error[1]["rejected"]) >= 1
    time.sleep(1.5)  # the last good chunk (0.33 s) runs out; the rejected ones leave the arm holding
    held = arm.command_array(time.monotonic() - 0.6)
    assert len(held) == 0 or np.ptp(held, axis=0).max() == 0.0, "the arm moved on rejected chunks"
    assert "rejected, holding" in rig.executor.tail(400)

    policy.corrupt = None  # the model recovers: the next good chunk is executed again
    recovered = time.monotonic()
    wait_until(lambda: arm.moved(recovered, 0.02), 20.0, message="motion after recovery")
    assert_safe_stream(arm.command_array())


def test_an_overshoot_near_a_limit_is_clamped_by_the_policy_node_and_executed(rig):
    """A flow-matching overshoot (jaws 0.6 rad past their stop) is clamped onto the limit before it is published:
    the executor accepts every chunk and the arm moves, inside its limits (it would hold on rejected chunks)."""
    arm, policy = rig.arm, rig.policy
    policy.corrupt = "overshoot"
    arm.send_goal()
    wait_until(lambda: len(arm.chunks) >= 3 and arm.moved(0.0, 0.02), 20.0, message=f"motion\n{rig.executor.tail()}")
    for chunk in list(arm.chunks):
        positions = conversions.parse_action_chunk(chunk).positions
        assert np.all(positions >= LOWER) and np.all(positions <= UPPER), positions
        assert np.all(positions[:, 5] == LOWER[5])
    assert not [d for d in arm.diagnostics if d[3] == 2], "the executor reported an error"
    assert_safe_stream(arm.command_array())


def _longest_hold(arm: Arm, since: float) -> float:
    """Seconds of the longest run of identical consecutive commands (the arm holding) after `since`."""
    with arm._lock:
        rows = [(t, p) for t, p in arm.commands if t >= since]
    longest, start = 0.0, None
    for (t0, p0), (t1, p1) in itertools.pairwise(rows):
        if np.array_equal(p0, p1):
            start = t0 if start is None else start
            longest = max(longest, t1 - start)
        else:
            start = None
    return longest


def test_inference_slower_than_the_chunk_horizon_never_jumps_and_still_makes_progress(rig):
    arm, policy = rig.arm, rig.policy
    _, result = arm.send_goal()
    wait_until(lambda: arm.moved(0.0, 0.03), 20.0, message=f"the arm to move\n{rig.executor.tail()}")

    policy.delay = 0.6  # > the 0.33 s horizon: by the wall clock every action of a chunk is due when it arrives
    slow = time.monotonic()
    # The executor counts a chunk's overtaken actions in executed steps (stale_clock=executed): the time the arm held
    # still while the chunk was computed overtakes nothing. So the arm holds between chunks and plays each from where
    # it stopped: a model slower than its own horizon (the 500M shape on CPU) moves the arm in steps, not never.
    progress = f"progress with slow inference\n{rig.executor.tail()}"
    wait_until(lambda: arm.moved(slow + 1.5, 0.02), 20.0, message=progress)
    assert _longest_hold(arm, slow + 0.8) > 0.15, "the queue never ran dry: inference was not slower than the chunk"
    feedback_latency = rig.node._task.latencies[-1]
    assert feedback_latency > CHUNK / 30.0

    policy.delay = 0.05  # back under the horizon: the arm streams again, without a jump
    fast = time.monotonic()
    wait_until(lambda: arm.moved(fast, 0.03), 20.0, message="motion once inference is fast again")
    assert_safe_stream(arm.command_array())
    assert not result.done(), "a slow model is not a failure of the task"


def test_policy_node_killed_while_streaming_the_arm_holds_and_a_restart_resumes():
    script = str(__file__)
    with executor_process(hold_timeout=1.0) as executor, rclpy.init():
        arm = Arm()
        try:
            policy = NodeProcess(script, ["0.03"], name="policy")
            with policy:
                arm.send_goal()
                wait_until(lambda: arm.moved(0.0, 0.03), 30.0, message=f"the arm to move\n{policy.tail()}")
                policy.kill()
            killed = time.monotonic()
            # The queue runs out (one horizon), the arm holds the last command, then the stream stops.
            stopped = wait_until(
                lambda: (d := _last_diag(arm, killed + 0.5)) and d[2] == "idle: no chunk, stream stopped" and d,
                10.0,
                message=f"the executor to report the stream stopped\n{executor.tail()}",
            )
            commands = arm.command_array()
            assert_safe_stream(commands)
            after = arm.command_array(killed + CHUNK / 30.0 + 0.4)  # the last chunk's span + delivery margin
            assert len(after) == 0 or np.ptp(after, axis=0).max() == 0.0, "the arm moved after the policy died"
            # Silence on joint_command from then on: the arm's own watchdog keeps it where it is.
            wait_until(lambda: time.monotonic() - arm.commands[-1][0] > 1.0, 3.0, message="the stream to stop")
            requests = int(stopped[1]["requests"])
            time.sleep(2.5)
            assert int(_last_diag(arm, 0.0)[1]["requests"]) > requests, "the executor stopped asking for chunks"
            assert executor.alive(), executor.tail()

            # A restarted policy node is heard: a new goal moves the arm again, continuing from where it held.
            with NodeProcess(script, ["0.03"], name="policy2") as restarted:
                resumed = time.monotonic()
                arm.send_goal("put the cube back", attempts=5)
                wait_until(lambda: arm.moved(resumed, 0.03), 30.0, message=f"motion after restart\n{restarted.tail()}")
            assert_safe_stream(arm.command_array())
        finally:
            arm.close()
    assert executor.proc.returncode in (0, -2), executor.tail()


def _serve(delay: float) -> None:
    """The policy node with the scripted policy, until SIGINT/SIGKILL (the kill test's child process)."""
    from rclpy.executors import ExternalShutdownException

    try:
        with rclpy.init():
            node = PolicyNode(policy=ScriptedPolicy(delay))
            executor = HandoffMultiThreadedExecutor(num_threads=4)
            executor.add_node(node)
            try:
                executor.spin()
            finally:
                node.stop()
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == "__main__":
    _serve(float(sys.argv[1]) if len(sys.argv) > 1 else 0.03)
