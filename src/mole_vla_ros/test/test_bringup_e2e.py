"""End to end over real DDS: the whole sim bringup in a child process, driven the way a user drives it.

The shipped tiny checkpoint (or a random one where none is shipped) is enough to prove the plumbing:
instruction -> chunks -> executor -> arm,
feedback and result of the action, cancel mid-task, the layer budget changed live and visible in RouterState.
"""

import math

import numpy as np
import pytest
import rclpy
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from mole_msgs.action import ExecuteInstruction
from mole_msgs.msg import ActionChunk, RouterState
from mole_msgs.srv import SetLayerBudget
from mole_vla_ros import qos
from mole_vla_ros.bringup import BringupArgs, default_checkpoint, parameters_for, plan
from mole_vla_ros.checkpoint_info import read_checkpoint_info
from so100_driver.joints import JOINT_NAMES
from so100_driver.testing.ros_harness import NodeProcess, wait_until

pytestmark = pytest.mark.dds


def test_plan_is_the_same_suite_for_sim_and_real_arm():
    sim = {spec.executable for spec in plan(BringupArgs(sim=True))}
    real = {spec.executable for spec in plan(BringupArgs(sim=False, port="/dev/ttyUSB3", camera="/dev/video2"))}
    assert sim == {"sim_node", "policy_node", "chunk_executor_node", "monitor_node"}
    assert real == {"arm_node", "camera_node", "policy_node", "chunk_executor_node", "monitor_node"}
    real_specs = {spec.name: spec for spec in plan(BringupArgs(sim=False, port="/dev/ttyUSB3", camera="2"))}
    assert parameters_for(real_specs["arm_node"])["port"] == "/dev/ttyUSB3"
    # The cameras follow the checkpoint: its first camera on the `camera` device, under camera/<name>/.
    first = read_checkpoint_info(default_checkpoint()).cameras[0]
    camera = real_specs[f"camera_{first}"]
    assert parameters_for(camera)["device"] == "2"
    assert ("image_raw", f"camera/{first}/image_raw") in camera.remappings
    policy = parameters_for(real_specs["policy_node"])
    assert policy["image_topics"][0] == f"camera/{first}/image_raw"
    # YAML values come through where no launch argument overrides them.
    executor = parameters_for(real_specs["chunk_executor"])
    assert executor["control_rate"] == 50.0 and executor["arm_model"] == "so100"
    with pytest.raises(ValueError, match="layer_budget"):
        BringupArgs(layer_budget=0.0)


class Client:
    """The user's side: an action client, the budget service, and recorders of what the suite publishes."""

    def __init__(self, node):
        self.node = node
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(node)
        self.chunks: list[ActionChunk] = []
        self.router: list[RouterState] = []
        self.joints: list[JointState] = []
        self.images: list[Image] = []
        node.create_subscription(ActionChunk, "/mole/action_chunk", self.chunks.append, qos.RELIABLE)
        node.create_subscription(RouterState, "/mole/router_state", self.router.append, qos.RELIABLE)
        node.create_subscription(JointState, "/joint_states", self.joints.append, qos.RELIABLE)
        node.create_subscription(Image, "/camera/scene/image_raw", self.images.append, qos.SENSOR_DATA)
        self.action = ActionClient(node, ExecuteInstruction, "/mole/execute_instruction")
        self.budget = node.create_client(SetLayerBudget, "/mole/set_layer_budget")
        self.instruction = node.create_publisher(String, "/mole/instruction", qos.RELIABLE)

    def spin(self, step: float) -> None:
        self.executor.spin_once(timeout_sec=step)

    def wait(self, predicate, timeout: float, what: str):
        return wait_until(predicate, timeout, self.spin, what)

    def call(self, future, timeout: float, what: str):
        self.wait(future.done, timeout, what)
        return future.result()


def _positions(msg: JointState) -> np.ndarray:
    order = {name: i for i, name in enumerate(msg.name)}
    return np.array([msg.position[order[name]] for name in JOINT_NAMES])


def test_sim_bringup_instruction_to_motion_with_cancel_and_live_budget():
    bringup = NodeProcess("mole_vla_ros.bringup", ["--sim", "--layer-budget", "0.5"], name="bringup")
    with bringup, rclpy.init():
        client = Client(rclpy.create_node("e2e_user"))
        try:
            assert client.action.wait_for_server(timeout_sec=60.0), f"no action server:\n{bringup.tail()}"
            client.wait(lambda: client.joints and client.images, 30.0, "joint states and camera images")
            image = client.images[-1]
            # The sim renders at the size the shipped checkpoint was trained on.
            height, width = read_checkpoint_info(default_checkpoint()).image_hw or (224, 224)
            assert (image.encoding, image.height, image.width) == ("rgb8", height, width)
            start = _positions(client.joints[-1])

            feedback = []
            goal = ExecuteInstruction.Goal(instruction="pick up the red cube", time_limit=30.0)
            handle = client.call(
                client.action.send_goal_async(goal, feedback_callback=lambda m: feedback.append(m.feedback)),
                15.0,
                "goal acceptance",
            )
            assert handle.accepted
            client.wait(lambda: len(client.chunks) >= 3, 60.0, f"three chunks\n{bringup.tail()}")
            chunk = client.chunks[-1]
            assert list(chunk.trajectory.joint_names) == list(JOINT_NAMES)
            layers = chunk.num_layers
            assert len(chunk.active_layers) == max(1, round(0.5 * layers))
            assert all(math.isfinite(p) for point in chunk.trajectory.points for p in point.positions)
            # The executor streams the chunks to the arm: the joints move away from where they started.
            client.wait(lambda: np.abs(_positions(client.joints[-1]) - start).max() > 0.02, 30.0, "the arm to move")
            client.wait(lambda: feedback, 10.0, "action feedback")
            assert feedback[-1].active_layer_fraction == pytest.approx(0.5)

            # The budget changes live: the next RouterState runs a quarter of the layers.
            quarter = max(1, round(0.25 * layers))
            response = client.call(client.budget.call_async(SetLayerBudget.Request(budget=0.25)), 10.0, "budget")
            assert response.success and response.active_layers == quarter
            seen = len(client.router)
            client.wait(
                lambda: any(r.num_active == quarter for r in client.router[seen:]), 30.0, "RouterState at the budget"
            )
            latest = next(r for r in client.router[seen:] if r.num_active == quarter)
            assert sum(latest.active_mask) == quarter and latest.budget == pytest.approx(0.25)

            # Cancel mid-task: the goal ends cancelled and the chunks stop.
            cancel = client.call(handle.cancel_goal_async(), 10.0, "cancel response")
            assert len(cancel.goals_canceling) == 1
            result = client.call(handle.get_result_async(), 30.0, "result after cancel").result
            assert not result.success and "cancel" in result.reason
            assert result.chunks >= 3

            # The instruction topic starts a task too.
            before = len(client.chunks)
            client.instruction.publish(String(data="pick up the blue cube"))
            client.wait(lambda: len(client.chunks) > before + 1, 60.0, "chunks for a topic instruction")
            assert client.chunks[-1].instruction == "pick up the blue cube"
            assert bringup.alive(), bringup.tail()
        finally:
            client.node.destroy_node()
    # SIGINT ends the spin and the nodes shut down in order (node_runner): a clean exit, not a crash.
    assert bringup.proc.returncode == 0, bringup.tail()
