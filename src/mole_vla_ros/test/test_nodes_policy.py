"""PolicyNode over real DDS with a policy test double (and once with the real tiny MoLePolicy): instructions
produce chunks, feedback and a result; cancel, pre-emption, the budget service, bad goals, NaN and stale inputs."""

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import rclpy
import torch
from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Header, String

from mole_msgs.action import ExecuteInstruction
from mole_msgs.msg import ActionChunk, RouterState
from mole_msgs.srv import SetLayerBudget
from mole_vla_ros import conversions, qos
from mole_vla_ros.nodes.policy_node import PolicyNode
from so100_driver.executors import HandoffMultiThreadedExecutor
from so100_driver.joints import JOINT_NAMES
from so100_driver.testing.ros_harness import wait_until

pytestmark = pytest.mark.dds

STATE = np.array([0.1, -0.2, 0.3, 0.0, 0.5, 0.2])


class FakePolicy:
    """The policy facade (MoLePolicy's) with known outputs: actions = state + 0.001 * step, top-k by budget."""

    num_layers = 8

    def __init__(self, delay=0.02, chunk_size=10, nan=False):
        self.delay, self.nan = delay, nan
        self.config = SimpleNamespace(chunk_size=chunk_size)
        self.calls = []
        self.resets = 0

    def reset(self):
        self.resets += 1

    def predict_action_chunk(self, batch, budget=0.5):
        images, state = batch["images"], batch["state"]
        assert all(img.ndim == 4 and img.shape[:2] == (1, 3) and float(img.min()) >= 0.0 for img in images)
        assert tuple(state.shape) == (1, 6) and len(batch["instruction"]) == 1
        self.calls.append((batch["instruction"][0], budget, state.clone()))
        time.sleep(self.delay)
        k = max(1, round(budget * self.num_layers))
        scores = torch.softmax(torch.arange(self.num_layers, dtype=torch.float32), 0)[None]
        mask = torch.zeros(1, self.num_layers, dtype=torch.bool)
        mask[0, -k:] = True
        steps = torch.arange(self.config.chunk_size, dtype=torch.float32)[None, :, None]
        actions = state[:, None, :] + 0.001 * steps
        if self.nan:
            actions[0, 3, 1] = float("nan")
        return SimpleNamespace(actions=actions, active_mask=mask, scores=scores, flops_fraction=k / 8, timings={})


class Graph:
    """The policy node and a probe node (camera + arm + executor stand-in) spinning in a background executor."""

    def __init__(self, policy, parameters=()):
        self.node = PolicyNode(policy=policy, parameter_overrides=list(parameters))
        self.probe = rclpy.create_node("policy_probe")
        self.chunks, self.routers = [], []
        self.sent_stamps = []
        self.feed_inputs = True
        p = self.probe
        p.create_subscription(ActionChunk, "mole/action_chunk", self.chunks.append, qos.RELIABLE)
        p.create_subscription(RouterState, "mole/router_state", self.routers.append, qos.RELIABLE)
        self.image_pub = p.create_publisher(Image, "camera/scene/image_raw", qos.SENSOR_DATA)
        self.joint_pub = p.create_publisher(JointState, "/joint_states", qos.RELIABLE)
        self.request_pub = p.create_publisher(Header, "mole/chunk_request", qos.RELIABLE)
        self.instruction_pub = p.create_publisher(String, "/mole/instruction", qos.LATEST_VALUE)
        self.success_pub = p.create_publisher(Bool, "/mole/task_success", qos.RELIABLE)
        self.client = ActionClient(p, ExecuteInstruction, "/mole/execute_instruction")
        self.budget_client = p.create_client(SetLayerBudget, "mole/set_layer_budget")
        p.create_timer(0.05, self._feed)
        p.create_timer(0.1, lambda: self.request_pub.publish(Header(stamp=p.get_clock().now().to_msg())))
        self.executor = HandoffMultiThreadedExecutor(num_threads=4)
        self.executor.add_node(self.node)
        self.executor.add_node(p)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        assert self.client.wait_for_server(timeout_sec=10.0)

    def _feed(self):
        if not self.feed_inputs:
            return
        stamp = self.probe.get_clock().now().to_msg()
        image = conversions.numpy_to_image(np.full((24, 32, 3), 128, np.uint8), "bgr8", stamp, "camera")
        self.image_pub.publish(image)
        self.joint_pub.publish(conversions.positions_to_joint_state(STATE, JOINT_NAMES, stamp))
        self.sent_stamps.append(conversions.stamp_to_seconds(stamp))

    def send_goal(self, instruction, **fields):
        feedback = []
        future = self.client.send_goal_async(
            ExecuteInstruction.Goal(instruction=instruction, **fields), feedback_callback=lambda m: feedback.append(m)
        )
        wait_until(future.done, 10.0, message="goal response")
        handle = future.result()
        assert handle.accepted
        return handle, handle.get_result_async(), feedback

    def close(self):
        self.node.stop()
        time.sleep(0.2)  # lets a running goal's execute callback return its result while the executor spins
        self.executor.shutdown(timeout_sec=5.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()
        self.probe.destroy_node()


@pytest.fixture
def graph(request):
    params = getattr(request, "param", {})
    with rclpy.init():
        g = Graph(FakePolicy(**params.get("policy", {})), params.get("parameters", ()))
        try:
            yield g
        finally:
            g.close()


def _result(future, timeout=10.0):
    wait_until(future.done, timeout, message="goal result")
    return future.result()


def test_goal_streams_chunks_with_feedback_and_ends_on_task_success(graph):
    _, result_future, feedback = graph.send_goal("pick up the red cube", layer_budget=0.25)
    wait_until(lambda: len(graph.chunks) >= 3, 10.0, message="three chunks")
    graph.success_pub.publish(Bool(data=True))
    wrapped = _result(result_future)
    result = wrapped.result
    assert wrapped.status == GoalStatus.STATUS_SUCCEEDED
    assert result.success and result.reason == "succeeded"
    assert result.chunks >= 3 and 0.0 < result.mean_latency < 1.0

    chunk = graph.chunks[0]
    parsed = conversions.parse_action_chunk(chunk)
    assert chunk.instruction == "pick up the red cube"
    np.testing.assert_allclose(parsed.positions, STATE + 0.001 * np.arange(10)[:, None], atol=1e-6)
    np.testing.assert_allclose(parsed.offsets, (np.arange(10) + 1) / 30.0, atol=1e-6)
    # Stamped with the observation it came from (one the probe sent), not with its publish time.
    assert min(abs(parsed.stamp - s) for s in graph.sent_stamps) < 1e-6
    assert list(chunk.active_layers) == [6, 7] and chunk.num_layers == 8
    assert [c.chunk_id for c in graph.chunks[:3]] == [0, 1, 2]
    router = graph.routers[0]
    assert router.budget == pytest.approx(0.25) and router.num_active == 2 and sum(router.active_mask) == 2
    states = [f.feedback.state for f in feedback]
    assert "executing" in states and feedback[-1].feedback.chunks >= 1
    assert feedback[-1].feedback.active_layer_fraction == pytest.approx(0.25)
    assert graph.node.policy.calls[0][0] == "pick up the red cube"
    np.testing.assert_allclose(graph.node.policy.calls[0][2].numpy()[0], STATE, atol=1e-6)


def test_cancel_ends_the_goal_and_stops_chunks(graph):
    handle, result_future, _ = graph.send_goal("stack the cubes")
    wait_until(lambda: graph.chunks, 10.0, message="a chunk")
    cancel = handle.cancel_goal_async()
    wait_until(cancel.done, 5.0, message="cancel response")
    wrapped = _result(result_future)
    assert wrapped.status == GoalStatus.STATUS_CANCELED
    assert wrapped.result.reason == "cancelled" and not wrapped.result.success
    time.sleep(0.3)  # requests keep coming at 10 Hz: no chunk may follow once cancelled
    count = len(graph.chunks)
    time.sleep(0.4)
    assert len(graph.chunks) == count


def test_new_goal_and_new_instruction_preempt(graph):
    _, first_result, _ = graph.send_goal("first task")
    wait_until(lambda: graph.chunks, 10.0, message="a chunk")
    _, second_result, _ = graph.send_goal("second task")
    first = _result(first_result)
    assert first.status == GoalStatus.STATUS_ABORTED
    assert first.result.reason == "pre-empted by a new instruction"
    wait_until(lambda: any(c.instruction == "second task" for c in graph.chunks), 10.0, message="second chunks")
    graph.instruction_pub.publish(String(data="third task from the topic"))
    second = _result(second_result)
    assert second.result.reason == "pre-empted by a new instruction"
    wait_until(lambda: graph.chunks[-1].instruction == "third task from the topic", 10.0, message="topic task")


def test_budget_service_changes_router_state_live(graph):
    graph.send_goal("sort the blocks")
    wait_until(lambda: graph.routers, 10.0, message="router state")
    assert graph.routers[-1].budget == pytest.approx(0.5) and graph.routers[-1].num_active == 4
    future = graph.budget_client.call_async(SetLayerBudget.Request(budget=0.75))
    response = wait_until(lambda: future.done() and future.result(), 5.0, message="budget response")
    assert response.success and response.active_layers == 6 and response.budget == pytest.approx(0.75)
    wait_until(lambda: graph.routers[-1].num_active == 6, 5.0, message="router state at the new budget")
    assert graph.routers[-1].budget == pytest.approx(0.75)
    bad = graph.budget_client.call_async(SetLayerBudget.Request(budget=1.5))
    response = wait_until(lambda: bad.done() and bad.result(), 5.0, message="budget response")
    assert not response.success and "(0, 1]" in response.message and response.budget == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("instruction", "fields", "reason"),
    [
        ("", {}, "instruction is empty"),
        ("   \n ", {}, "instruction is empty"),
        ("x" * 5000, {}, "5000 bytes; the limit is 4096"),
        ("pick\x07up", {}, "control characters"),
        ("pick up", {"layer_budget": 1.5}, "layer_budget 1.5"),
        ("pick up", {"time_limit": -1.0}, "time_limit -1.0"),
    ],
)
def test_invalid_goals_end_with_a_clear_reason(graph, instruction, fields, reason):
    _, result_future, _ = graph.send_goal(instruction, **fields)
    wrapped = _result(result_future)
    assert wrapped.status == GoalStatus.STATUS_ABORTED
    assert wrapped.result.reason.startswith("invalid goal:") and reason in wrapped.result.reason
    assert not graph.chunks


@pytest.mark.parametrize("graph", [{"policy": {"nan": True}}], indirect=True)
def test_nan_predictions_are_never_published(graph):
    _, result_future, _ = graph.send_goal("pick up the red cube")
    wrapped = _result(result_future)
    assert wrapped.status == GoalStatus.STATUS_ABORTED
    assert "non-finite" in wrapped.result.reason and wrapped.result.chunks == 0
    assert graph.node.policy.calls and not graph.chunks


@pytest.mark.parametrize("graph", [{"parameters": [Parameter("max_observation_age", value=0.3)]}], indirect=True)
def test_stale_observations_are_not_used(graph):
    graph.feed_inputs = False
    time.sleep(0.5)  # everything the probe sent is now older than 0.3 s
    _, result_future, feedback = graph.send_goal("pick up the red cube", time_limit=1.0)
    wrapped = _result(result_future)
    assert wrapped.result.reason.startswith("time limit") and wrapped.result.chunks == 0
    assert "stale" in wrapped.result.reason or "no " in wrapped.result.reason  # it says which input was unusable
    assert not graph.node.policy.calls
    assert feedback and feedback[-1].feedback.state == "waiting_for_observation"


def test_policy_node_runs_the_real_tiny_mole_policy():
    torch.set_num_threads(1)
    params = [Parameter("chunk_size", value=8), Parameter("num_steps", value=2)]
    with rclpy.init():
        graph = Graph(None, params)
        try:
            graph.send_goal("pick up the red cube", layer_budget=0.5, time_limit=60.0)
            wait_until(lambda: graph.chunks and graph.routers, 60.0, message="a chunk from the tiny policy")
            parsed = conversions.parse_action_chunk(graph.chunks[0])
            assert parsed.positions.shape == (8, 6) and np.all(np.isfinite(parsed.positions))
            router = graph.routers[0]
            layers = graph.node.policy.num_layers
            assert len(router.active_mask) == layers
            assert router.num_active == max(1, round(0.5 * layers))
            assert 0.0 < router.flops_fraction <= 1.0
        finally:
            graph.close()
