"""Rejected chunks reach the user, over real DDS: the chunk executor (own process) refuses a chunk, announces it on
mole/chunk_rejected, and the policy node puts the reason (joint / step) into the ExecuteInstruction goal's feedback,
and into its result reason when the goal ends while its chunks are still being refused.

Reuses the stand-in arm and the scripted policy of test_faults_policy.py.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from action_msgs.msg import GoalStatus
from std_msgs.msg import String

from mole_msgs.action import ExecuteInstruction
from mole_vla_ros import qos
from mole_vla_ros.nodes.chunk_executor_node import rejection_message
from mole_vla_ros.nodes.policy_node import PolicyNode
from so100_driver.testing.ros_harness import NodeProcess, wait_until

sys.path.insert(0, str(Path(__file__).parent))  # pytest runs with --import-mode=importlib: no test dir on the path
from test_faults_policy import EXECUTOR, Arm, ScriptedPolicy

pytestmark = pytest.mark.dds

INTO_TABLE = np.array([0.0, 0.6, 0.3, 0.7, 0.0, 0.6])  # the jaws 5 cm below the table top (test_collision_check)


class IntoTablePolicy(ScriptedPolicy):
    """Every chunk drives the gripper from the observed state down into the table."""

    def predict_action_chunk(self, batch, budget=0.5):
        pred = super().predict_action_chunk(batch, budget)
        state = batch["state"][0].double().numpy()
        pred.actions[0] = pred.actions.new_tensor(np.linspace(state, INTO_TABLE, pred.actions.shape[1]))
        return pred


def _run_goal(arm: Arm, time_limit: float):
    """Send a goal, collecting its feedback; returns (feedback list, result future)."""
    feedback: list[ExecuteInstruction.Feedback] = []
    lock = threading.Lock()

    def on_feedback(msg):
        with lock:
            feedback.append(msg.feedback)

    goal = ExecuteInstruction.Goal(instruction="pick up the red cube", time_limit=time_limit)
    assert arm.client.wait_for_server(timeout_sec=30.0), "no action server"
    future = arm.client.send_goal_async(goal, feedback_callback=on_feedback)
    wait_until(future.done, 10.0, message="goal response")
    handle = future.result()
    assert handle.accepted
    return feedback, handle.get_result_async()


def _rig(policy: ScriptedPolicy, *executor_params: str):
    args = ["--ros-args", "-p", "hold_timeout:=1.0"]
    for param in executor_params:
        args += ["-p", param]
    return NodeProcess(EXECUTOR, args, name="executor"), policy


def _run(policy: ScriptedPolicy, executor_params: tuple[str, ...], expect: tuple[str, ...]):
    executor, policy = _rig(policy, *executor_params)
    with executor, rclpy.init():
        node = PolicyNode(policy=policy)
        arm = Arm(node)
        reports: list[dict] = []
        arm.node.create_subscription(
            String, "mole/chunk_rejected", lambda m: reports.append(json.loads(m.data)), qos.RELIABLE
        )
        try:
            # The goal's time limit must not run out while the executor process is still starting (a loaded machine).
            wait_until(
                lambda: arm.node.count_publishers("mole/chunk_request") > 0,
                60.0,
                message=f"the executor up\n{executor.tail()}",
            )
            feedback, result = _run_goal(arm, time_limit=6.0)
            rejected = wait_until(
                lambda: next((f for f in list(feedback) if f.last_rejection), None),
                20.0,
                message=f"feedback with a rejection\n{executor.tail()}",
            )
            for word in expect:
                assert word in rejected.last_rejection, rejected.last_rejection
            assert reports and reports[0]["instruction"] == "pick up the red cube"
            reported = {f"chunk {r['chunk_id']}: {r['reason']}" for r in list(reports)}
            assert rejected.last_rejection in reported, (rejected.last_rejection, reported)
            wrapped = wait_until(lambda: result.done() and result.result(), 15.0, message="the goal to end")
            assert wrapped.status == GoalStatus.STATUS_ABORTED
            reason = wrapped.result.reason
            assert reason.startswith("time limit; last chunk rejected: "), reason
            for word in expect:
                assert word in reason, reason
        finally:
            node.stop()
            time.sleep(0.2)
            arm.close()
            node.destroy_node()
        assert executor.alive(), executor.tail()


def test_out_of_limit_chunks_put_joint_and_step_in_the_goal_feedback_and_result():
    policy = ScriptedPolicy()
    policy.corrupt = "out_of_limits"
    _run(policy, (), ("shoulder_pan", "step 0", "outside its limits"))


def test_colliding_chunks_put_bodies_and_step_in_the_goal_feedback_and_result():
    _run(IntoTablePolicy(), ("collision_check:=true",), ("collision at step ", "table", "shoulder_lift="))


def test_rejection_payload_is_json_with_id_instruction_and_reason():
    report = json.loads(rejection_message(7, "pick it", "collision at step 3: jaw_link collides with table"))
    assert report == {
        "chunk_id": 7,
        "instruction": "pick it",
        "reason": "collision at step 3: jaw_link collides with table",
    }
