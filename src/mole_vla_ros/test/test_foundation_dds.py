"""The foundation is real: two processes exchange an ExecuteInstruction goal over Fast DDS."""

from pathlib import Path

import pytest
import rclpy
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor

from mole_msgs.action import ExecuteInstruction
from mole_msgs.msg import ActionChunk, RouterState
from mole_msgs.srv import SetLayerBudget
from so100_driver.testing.ros_harness import NodeProcess, wait_until

SERVER = str(Path(__file__).parent / "fixtures" / "countdown_instruction_server.py")

pytestmark = pytest.mark.dds


def test_goal_feedback_and_result_across_processes():
    with NodeProcess(SERVER) as server, rclpy.init():
        node = rclpy.create_node("foundation_client")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        client = ActionClient(node, ExecuteInstruction, "/mole/execute_instruction")
        assert client.wait_for_server(timeout_sec=20.0), f"server never appeared:\n{server.tail()}"

        feedback = []
        goal = ExecuteInstruction.Goal(instruction="pick up the red cube", layer_budget=0.5)
        send = client.send_goal_async(goal, feedback_callback=lambda msg: feedback.append(msg.feedback))
        wait_until(send.done, 10.0, lambda t: executor.spin_once(timeout_sec=t), "goal acceptance")
        handle = send.result()
        assert handle.accepted
        result_future = handle.get_result_async()
        wait_until(result_future.done, 10.0, lambda t: executor.spin_once(timeout_sec=t), "result")

        result = result_future.result().result
        assert result.success
        assert result.reason == "done: pick up the red cube"
        assert result.chunks == 3
        # Feedback arrives in order and carries the goal's budget back.
        assert [f.chunks for f in feedback] == sorted(f.chunks for f in feedback)
        assert feedback and feedback[-1].chunks <= 3
        assert all(f.active_layer_fraction == pytest.approx(0.5) for f in feedback)
        node.destroy_node()
    assert server.proc.returncode in (0, -2), server.tail()


def test_interfaces_carry_documented_fields():
    chunk = ActionChunk()
    chunk.trajectory.joint_names = ["shoulder_pan"]
    chunk.active_layers = [0, 3, 5]
    assert list(chunk.active_layers) == [0, 3, 5]
    state = RouterState(active_mask=[True, False], scores=[0.7, 0.3], budget=0.5, num_active=1)
    assert state.num_active == sum(state.active_mask)
    request = SetLayerBudget.Request(budget=0.25)
    assert request.budget == pytest.approx(0.25)
    assert {"instruction", "layer_budget", "time_limit"} <= set(ExecuteInstruction.Goal.get_fields_and_field_types())
