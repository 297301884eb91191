"""Policy-node parameter start_state: before an instruction runs, the arm moves to a named SRDF state (through the
chunk executor, over real DDS, to the stand-in arm of test_faults_policy.py), feedback state "moving_to_start",
and the policy's first chunk starts from there."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter

from mole_msgs.action import ExecuteInstruction
from mole_vla_ros.moveit_adapter import named_state_error, named_states
from mole_vla_ros.nodes.policy_node import PolicyNode
from so100_driver.joints import JOINT_NAMES
from so100_driver.testing.ros_harness import NodeProcess, wait_until

sys.path.insert(0, str(Path(__file__).parent))  # pytest runs with --import-mode=importlib: no test dir on the path
from test_faults_policy import EXECUTOR, START, STEP, Arm, ScriptedPolicy

TOLERANCE = 0.05


def _goal_with_feedback(client, time_limit: float = 30.0):
    states: list[str] = []
    lock = threading.Lock()

    def on_feedback(msg):
        with lock:
            if not states or states[-1] != msg.feedback.state:
                states.append(msg.feedback.state)

    assert client.wait_for_server(timeout_sec=30.0), "no action server"
    future = client.send_goal_async(
        ExecuteInstruction.Goal(instruction="pick up the red cube", time_limit=time_limit),
        feedback_callback=on_feedback,
    )
    wait_until(future.done, 10.0, message="goal response")
    assert future.result().accepted
    return states, future.result().get_result_async()


@pytest.mark.dds
def test_the_arm_moves_to_the_named_state_before_the_policy_runs():
    ready = named_states("so100")["ready"]
    assert named_state_error("so100", "ready", START)[0] > 1.0  # the stand-in arm starts far from it
    executor = NodeProcess(EXECUTOR, ["--ros-args", "-p", "hold_timeout:=1.0"], name="executor")
    with executor, rclpy.init():
        overrides = [Parameter("start_state", value="ready"), Parameter("start_state_tolerance", value=TOLERANCE)]
        node = PolicyNode(policy=ScriptedPolicy(), parameter_overrides=overrides)
        arm = Arm(node)
        try:
            # The policy node waits 10 s for the executor: on a loaded machine its process may take longer to start.
            wait_until(lambda: node.count_publishers("mole/chunk_request") > 0, 60.0, message="the executor up")
            states, result = _goal_with_feedback(arm.client)
            wait_until(lambda: len(arm.chunks) >= 2, 30.0, message=f"the move and a policy chunk\n{executor.tail()}")
            move, first = arm.chunks[0], arm.chunks[1]
            # The move is one chunk ending exactly on the named state; the arm never jumps on the way.
            end = np.array(move.trajectory.points[-1].positions)
            for name, value in ready.items():
                assert end[JOINT_NAMES.index(name)] == pytest.approx(value)
            # A timed move, not a jump: many commands on the way (a loaded machine may space a few ticks out).
            commands = arm.command_array()
            assert len(np.unique(commands[:, 3])) >= 8, commands[:, 3]
            assert np.abs(np.diff(commands, axis=0)).max() < 0.25
            # The policy's first chunk was computed from an observation at the start state (it ramps from there).
            policy_start = np.array(first.trajectory.points[0].positions)
            assert named_state_error("so100", "ready", policy_start)[0] <= TOLERANCE + STEP + 1e-6
            wait_until(lambda: "executing" in states, 10.0, message=f"feedback 'executing', got {states}")
            assert states[0] == "moving_to_start", states
            assert states.index("moving_to_start") < states.index("executing")
            assert not result.done()
        finally:
            node.stop()
            time.sleep(0.2)
            arm.close()
            node.destroy_node()
        assert executor.alive(), executor.tail()


@pytest.fixture
def ros():
    with rclpy.init():
        yield


def test_an_unknown_start_state_is_refused_naming_the_srdf_states(ros):
    with pytest.raises(ValueError, match="'ready'"):
        PolicyNode(policy=ScriptedPolicy(), parameter_overrides=[Parameter("start_state", value="sofa")])


def test_start_state_can_change_at_runtime_but_only_to_a_named_state(ros):
    node = PolicyNode(policy=ScriptedPolicy())
    try:
        assert node.set_parameters([Parameter("start_state", value="home")])[0].successful
        refused = node.set_parameters([Parameter("start_state", value="sofa")])[0]
        assert not refused.successful and "home" in refused.reason
    finally:
        node.destroy_node()


@pytest.mark.skipif(importlib.util.find_spec("moveit") is not None, reason="moveit_py installed")
def test_the_moveit_planner_without_moveit_py_says_what_to_install(ros):
    with pytest.raises(RuntimeError, match="moveit_py"):
        PolicyNode(policy=ScriptedPolicy(), parameter_overrides=[Parameter("start_state_planner", value="moveit")])


@pytest.mark.dds
def test_the_mujoco_arm_reaches_the_named_state_through_the_executor():
    """The same move against the simulated arm (physics, its own safety layer): the goal's feedback goes from
    moving_to_start on once the sim's /joint_states are within tolerance of `ready`."""
    from rclpy.action import ActionClient

    from so100_driver.executors import HandoffMultiThreadedExecutor

    sim_args = ["--ros-args", "-p", "camera_fps:=0.0", "-p", "seed:=1"]  # no camera: the policy never infers
    with (
        NodeProcess("so100_driver.sim.sim_node", sim_args, name="sim") as sim,
        NodeProcess(EXECUTOR, ["--ros-args", "-p", "hold_timeout:=30.0"], name="executor") as executor,
        rclpy.init(),
    ):
        overrides = [Parameter("start_state", value="ready"), Parameter("start_state_tolerance", value=TOLERANCE)]
        node = PolicyNode(policy=ScriptedPolicy(), parameter_overrides=overrides)
        client_node = rclpy.create_node("start_state_probe")

        spinner = HandoffMultiThreadedExecutor(num_threads=4)  # the policy's goal loop blocks a thread
        spinner.add_node(node)
        spinner.add_node(client_node)
        thread = threading.Thread(target=spinner.spin, daemon=True)
        thread.start()
        try:
            client = ActionClient(client_node, ExecuteInstruction, "/mole/execute_instruction")
            wait_until(
                lambda: node.count_publishers("mole/chunk_request") > 0 and node._joint_state is not None,
                60.0,
                message=f"the executor and the sim up\n{sim.tail()}",
            )
            states, result = _goal_with_feedback(client)
            wait_until(
                lambda: "waiting_for_observation" in states or result.done(),
                60.0,
                message=f"the start state, feedback {states}\n{executor.tail()}\n{sim.tail()}",
            )
            assert not result.done(), result.result().result.reason
            assert states[0] == "moving_to_start", states
            latest = node._joint_state[0]
            error, joint = named_state_error("so100", "ready", latest)
            assert error <= TOLERANCE, (joint, error)
            assert latest[JOINT_NAMES.index("wrist_flex")] == pytest.approx(1.2, abs=TOLERANCE)
        finally:
            node.stop()
            time.sleep(0.2)
            spinner.shutdown(timeout_sec=5.0)
            thread.join(timeout=5.0)
            client_node.destroy_node()
            node.destroy_node()
        assert executor.alive() and sim.alive(), executor.tail()
