"""Fault injection on the policy node's inputs, over real DDS: the camera stalls, sends garbage or changes
resolution; instructions that are huge or not UTF-8; two clients sending goals at once; parameters set to invalid
values at runtime through the parameter service.

Each fault: the node keeps running (a good input afterwards works), the model never sees the bad input, and the
user gets the reason (the goal's result, a log line, or the parameter service's reason).
"""

from __future__ import annotations

import math
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import rclpy
import torch
from action_msgs.msg import GoalStatus
from rcl_interfaces.msg import Log
from rclpy.action import ActionClient
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from mole_msgs.action import ExecuteInstruction
from mole_msgs.msg import ActionChunk
from mole_vla_ros import conversions, qos
from mole_vla_ros.nodes.policy_node import PolicyNode
from so100_driver.executors import HandoffMultiThreadedExecutor
from so100_driver.joints import JOINT_NAMES
from so100_driver.testing.ros_harness import wait_until

pytestmark = pytest.mark.dds

STATE = np.array([0.1, -0.2, 0.3, 0.0, 0.5, 0.2])
MAX_AGE = 0.3


class RecordingPolicy:
    """The policy facade: records every image it is given, answers with actions = state."""

    num_layers = 4

    def __init__(self) -> None:
        self.images: list[tuple[int, ...]] = []
        self.called_at: list[float] = []  # wall clock (the node's clock) when each chunk's inference began
        self.config = SimpleNamespace(chunk_size=8)

    def reset(self) -> None:
        pass

    def predict_action_chunk(self, batch, budget=0.5):
        self.called_at.append(time.time())
        self.images += [tuple(img.shape) for img in batch["images"]]
        time.sleep(0.02)
        actions = batch["state"][:, None, :].repeat(1, self.config.chunk_size, 1)
        mask = torch.tensor([[True, True, False, False]])
        return SimpleNamespace(actions=actions, active_mask=mask, scores=torch.full((1, 4), 0.25), flops_fraction=0.5)


class Rig:
    """The policy node and a probe (camera + arm + user) spinning together; `camera` picks what the camera sends."""

    def __init__(self, policy, parameters=()) -> None:
        self.node = PolicyNode(policy=policy, parameter_overrides=[Parameter("max_observation_age", value=MAX_AGE)])
        if parameters:
            self.node.set_parameters(list(parameters))
        self.probe = rclpy.create_node("input_fault_probe")
        self.camera = lambda stamp: conversions.numpy_to_image(np.full((24, 32, 3), 90, np.uint8), "rgb8", stamp)
        self.chunks: list[ActionChunk] = []
        self.node_log: list[str] = []  # the policy node's log lines, as /rosout carries them
        p = self.probe
        p.create_subscription(ActionChunk, "mole/action_chunk", self.chunks.append, qos.RELIABLE)
        # From /rosout rather than polling pytest's capfd while the node writes: capfd's read-then-truncate loses
        # whatever another thread writes in between. Transient local: /rosout keeps a history, so nothing logged
        # before this subscription matched is missed.
        node_name = self.node.get_logger().name
        p.create_subscription(
            Log,
            "/rosout",
            lambda m: m.name == node_name and self.node_log.append(m.msg),
            QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL),
        )
        self.image_pub = p.create_publisher(Image, "camera/scene/image_raw", qos.SENSOR_DATA)
        self.joint_pub = p.create_publisher(JointState, "/joint_states", qos.RELIABLE)
        self.instruction_pub = p.create_publisher(String, "/mole/instruction", qos.RELIABLE)
        p.create_timer(0.05, self._feed)
        p.create_timer(0.1, lambda: self.node._on_chunk_request(None))  # the executor's requests, without DDS
        self.executor = HandoffMultiThreadedExecutor(num_threads=4)
        self.executor.add_node(self.node)
        self.executor.add_node(p)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        stamp = self.probe.get_clock().now().to_msg()
        image = self.camera(stamp)
        if image is not None:
            self.image_pub.publish(image)
        self.joint_pub.publish(conversions.positions_to_joint_state(STATE, JOINT_NAMES, stamp))

    def send_goal(self, instruction="pick up the red cube", client=None, **fields):
        client = client or self.client()
        feedback = []
        future = client.send_goal_async(
            ExecuteInstruction.Goal(instruction=instruction, **fields), feedback_callback=lambda m: feedback.append(m)
        )
        handle = wait_until(lambda: future.done() and future.result(), 10.0, message="goal response")
        assert handle.accepted
        return handle, handle.get_result_async(), feedback

    def client(self, node=None) -> ActionClient:
        client = ActionClient(node or self.probe, ExecuteInstruction, "/mole/execute_instruction")
        assert client.wait_for_server(timeout_sec=10.0)
        return client

    def close(self) -> None:
        self.node.stop()
        time.sleep(0.2)  # a running goal's execute callback returns its result while the executor spins
        self.executor.shutdown(timeout_sec=5.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()
        self.probe.destroy_node()


@pytest.fixture
def rig():
    with rclpy.init():
        r = Rig(RecordingPolicy())
        try:
            yield r
        finally:
            r.close()


def _result(future, timeout=10.0):
    return wait_until(lambda: future.done() and future.result(), timeout, message="goal result")


def _proves_the_node_still_works(rig: Rig) -> None:
    before = len(rig.chunks)
    handle, result, _ = rig.send_goal("pick up the blue cube")
    wait_until(lambda: len(rig.chunks) > before, 10.0, message="chunks from a good goal afterwards")
    assert rig.chunks[-1].instruction == "pick up the blue cube"
    wait_until(handle.cancel_goal_async().done, 5.0, message="cancel")
    assert _result(result).result.reason == "cancelled"


# ---- the camera ----------------------------------------------------------------------------------------


def test_camera_stall_mid_task_stops_inference_and_the_goal_says_why(rig):
    _, result, feedback = rig.send_goal(time_limit=2.5)
    wait_until(lambda: len(rig.chunks) >= 3, 10.0, message="chunks while the camera works")
    rig.camera = lambda stamp: None  # the camera stalls; joint states keep coming
    stalled = time.monotonic()
    wrapped = _result(result, 10.0)
    assert wrapped.status == GoalStatus.STATUS_ABORTED
    wait_until(lambda: len(rig.chunks) >= wrapped.result.chunks, 5.0, message="every chunk the goal counted")
    # No inference started from a stale image: the observation each chunk carries was at most max_observation_age
    # old when the model was called (+ slack for the thread switch between the node's check and the call). Using
    # the stalled camera's last image after it aged out would show the stall (seconds, up to the time limit).
    called_at = rig.node.policy.called_at
    assert len(called_at) == len(rig.chunks), "a chunk was computed but not published"
    ages = [t - conversions.stamp_to_seconds(c.header.stamp) for t, c in zip(called_at, rig.chunks, strict=True)]
    assert max(ages) <= MAX_AGE + 0.5, ages
    reason = wrapped.result.reason
    assert reason.startswith("time limit") and "camera/scene/image_raw" in reason and "stale" in reason, reason
    # The goal said why it waited while it waited, up to its end (no feedback follows the outcome).
    states = [f.feedback.state for f in feedback]
    assert states[-1] == "waiting_for_observation", states
    assert time.monotonic() - stalled < 5.0
    rig.camera = lambda stamp: conversions.numpy_to_image(np.full((24, 32, 3), 90, np.uint8), "rgb8", stamp)
    _proves_the_node_still_works(rig)


def _image(encoding="rgb8", height=24, width=32, step=None, nbytes=None):
    def make(stamp):
        msg = Image(height=height, width=width, encoding=encoding, step=step if step is not None else width * 3)
        msg.header.stamp = stamp
        msg.data = bytes(nbytes if nbytes is not None else msg.step * height)
        return msg

    return make


@pytest.mark.parametrize(
    ("camera", "log"),
    [
        (_image(encoding="32FC1", step=128), "unsupported image encoding '32FC1'"),
        (_image(encoding="yuv422", step=64), "unsupported image encoding 'yuv422'"),
        (_image(nbytes=100), "image data has 100 bytes"),
        (_image(step=10), "image step 10 is smaller than width*channels"),
        (_image(height=0, width=0, step=0), "image has no pixels"),
    ],
    ids=["float-encoding", "yuv", "short-data", "short-step", "empty"],
)
def test_garbage_images_are_refused_with_a_log_and_never_reach_the_model(rig, camera, log):
    rig.camera = camera
    _, result, feedback = rig.send_goal(time_limit=1.0)
    wrapped = _result(result)
    assert "time limit" in wrapped.result.reason and "no image yet on camera/scene/image_raw" in wrapped.result.reason
    assert not rig.node.policy.images and not rig.chunks
    # Nothing was ever inferred: the goal only waited for an image.
    assert feedback[-1].feedback.state == "waiting_for_observation"
    refusal = f"image on camera/scene/image_raw refused: {log}"
    wait_until(lambda: any(refusal in line for line in rig.node_log), 5.0, message=f"'{refusal}' on /rosout")
    rig.camera = _image()  # a good camera again: zeros, rgb8
    _proves_the_node_still_works(rig)


def test_resolution_changes_mid_stream_reach_the_real_tiny_policy_and_chunks_continue():
    torch.set_num_threads(1)
    sizes = [(24, 32), (48, 64), (100, 20)]  # landscape, larger, then a tall portrait frame
    with rclpy.init():
        rig = Rig(None, ())
        rig.node.set_parameters([Parameter("max_observation_age", value=MAX_AGE)])
        try:
            rig.send_goal(time_limit=120.0)
            for h, w in sizes:
                rig.camera = lambda stamp, h=h, w=w: conversions.numpy_to_image(
                    np.random.default_rng(h).integers(0, 255, (h, w, 3), dtype=np.uint8), "bgr8", stamp
                )
                changed_at = len(rig.chunks)
                wait_until(
                    lambda changed_at=changed_at: len(rig.chunks) >= changed_at + 2, 60.0, message=f"chunks at {h}x{w}"
                )
            for chunk in rig.chunks:
                positions = conversions.parse_action_chunk(chunk).positions
                assert positions.shape[1] == 6 and np.all(np.isfinite(positions))
        finally:
            rig.close()


# ---- instructions and goals ----------------------------------------------------------------------------


def test_huge_and_non_utf8_instructions_are_refused_and_the_node_keeps_running(rig):
    megabyte = "a" * (1 << 20)
    _, result, _ = rig.send_goal(megabyte)
    wrapped = _result(result)
    assert wrapped.status == GoalStatus.STATUS_ABORTED
    assert wrapped.result.reason == "invalid goal: instruction is 1048576 bytes; the limit is 4096"

    wait_until(lambda: rig.instruction_pub.get_subscription_count() > 0, 10.0, message="the instruction subscription")
    rig.instruction_pub.publish(String(data=megabyte))
    # Invalid UTF-8 cannot be built as a Python str: patch the bytes of a serialized message instead.
    garbled = serialize_message(String(data="pick up the XX cube")).replace(b"XX", b"\xff\xfe")
    rig.instruction_pub.publish(garbled)

    for expected in (
        "instruction refused: instruction is 1048576 bytes; the limit is 4096",
        "instruction refused: instruction is not valid UTF-8",
    ):
        wait_until(
            lambda expected=expected: any(line.startswith(expected) for line in rig.node_log),
            15.0,
            message=f"'{expected}' in the policy node's /rosout log",
        )
    assert rig.node._task is None or rig.node._task.instruction != megabyte
    assert not rig.node.policy.images, "a refused instruction started inference"
    _proves_the_node_still_works(rig)


def test_two_clients_sending_goals_at_once_one_wins_the_other_is_told(rig):
    other = rclpy.create_node("second_user")
    rig.executor.add_node(other)
    try:
        first, second = rig.client(), rig.client(other)
        goals = [ExecuteInstruction.Goal(instruction=f"task {i}", time_limit=30.0) for i in (1, 2)]
        futures = [first.send_goal_async(goals[0]), second.send_goal_async(goals[1])]  # no wait in between
        handles = [wait_until(lambda f=f: f.done() and f.result(), 10.0, message="goal response") for f in futures]
        assert all(h.accepted for h in handles)
        results = [h.get_result_async() for h in handles]
        wait_until(lambda: any(r.done() for r in results), 10.0, message="one goal to end")
        loser = next(i for i, r in enumerate(results) if r.done())
        winner = 1 - loser
        assert results[loser].result().result.reason == "pre-empted by a new instruction"
        assert results[loser].result().status == GoalStatus.STATUS_ABORTED
        count = len(rig.chunks)
        wait_until(lambda: len(rig.chunks) >= count + 3, 10.0, message="the winner's chunks")
        assert {c.instruction for c in rig.chunks[count + 1 :]} == {f"task {winner + 1}"}
        assert not results[winner].done()
        wait_until(handles[winner].cancel_goal_async().done, 5.0, message="cancel")
        assert _result(results[winner]).result.reason == "cancelled"
    finally:
        rig.executor.remove_node(other)
        other.destroy_node()


# ---- parameters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("layer_budget", 1.5, "layer_budget"),
        ("layer_budget", 0.0, "layer_budget"),
        ("fps", -5.0, "fps"),
        ("max_observation_age", math.nan, "max_observation_age"),
        ("time_limit", math.inf, "time_limit"),
        ("layer_budget", "half", "type"),
        ("checkpoint", "/tmp/other", "read-only"),
        ("chunk_size", 16, "read-only"),
    ],
)
def test_invalid_runtime_parameters_are_rejected_over_dds_with_a_reason(rig, name, value, reason):
    client = AsyncParameterClient(rig.probe, "policy_node")
    assert client.wait_for_services(timeout_sec=10.0)
    before = rig.node.get_parameter(name).value
    future = client.set_parameters([Parameter(name, value=value)])
    response = wait_until(lambda: future.done() and future.result(), 10.0, message="set_parameters response")
    outcome = response.results[0]
    assert not outcome.successful and reason in outcome.reason, outcome.reason
    assert rig.node.get_parameter(name).value == before
    assert (rig.node.params.fps, rig.node.params.max_observation_age) == (30.0, MAX_AGE)
    _proves_the_node_still_works(rig)
