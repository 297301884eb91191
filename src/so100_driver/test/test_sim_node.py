"""sim_node over real DDS in a child process: camera images, joint states, trajectories, task success, reset."""

from __future__ import annotations

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from so100_driver.arm_node import COMMAND_QOS, JOINT_STATES_QOS
from so100_driver.joints import JOINT_NAMES
from so100_driver.sim.sim_node import INSTRUCTION_QOS, SUCCESS_QOS
from so100_driver.testing.ros_harness import NodeProcess, wait_until

pytestmark = pytest.mark.dds
WIDTH, HEIGHT = 128, 96


@pytest.fixture(scope="module")
def rig():
    params = {"camera_width": WIDTH, "camera_height": HEIGHT, "camera_fps": 15.0, "seed": 3, "success_rate": 10.0}
    args = ["--ros-args"] + [a for k, v in params.items() for a in ("-p", f"{k}:={v}")]
    node = NodeProcess("so100_driver.sim.sim_node", args).start()
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node("sim_node_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    got: dict = {"image": [], "wrist": [], "info": [], "js": [], "success": []}
    probe.create_subscription(Image, "camera/scene/image_raw", got["image"].append, qos_profile_sensor_data)
    probe.create_subscription(CameraInfo, "camera/scene/camera_info", got["info"].append, qos_profile_sensor_data)
    probe.create_subscription(Image, "camera/wrist/image_raw", got["wrist"].append, qos_profile_sensor_data)
    probe.create_subscription(JointState, "joint_states", got["js"].append, JOINT_STATES_QOS)
    probe.create_subscription(Bool, "/mole/task_success", got["success"].append, SUCCESS_QOS)
    rig = {
        "node": node,
        "probe": probe,
        "got": got,
        "spin": lambda step: executor.spin_once(timeout_sec=step),
        "traj_pub": probe.create_publisher(
            JointTrajectory, "joint_trajectory_controller/joint_trajectory", COMMAND_QOS
        ),
        "instruction_pub": probe.create_publisher(String, "mole/active_instruction", INSTRUCTION_QOS),
        "reset": probe.create_client(Trigger, "sim/reset"),
    }
    try:
        wait_until(lambda: got["js"] and got["image"], 30, rig["spin"], "first joint_states and image")
        yield rig
    finally:
        code = node.stop()
        probe.destroy_node()
        executor.shutdown()
        rclpy.shutdown(context=context)
        assert code == 0, node.tail()


def test_camera_publishes_rgb8_images_of_the_configured_size(rig):
    got = rig["got"]
    wait_until(lambda: len(got["image"]) >= 3 and got["info"], 10, rig["spin"], "three images and camera_info")
    image = got["image"][-1]
    assert (image.width, image.height, image.encoding, image.step) == (WIDTH, HEIGHT, "rgb8", WIDTH * 3)
    pixels = np.frombuffer(bytes(image.data), dtype=np.uint8).reshape(HEIGHT, WIDTH, 3)
    assert pixels.std() > 5, "a blank frame"
    info = got["info"][-1]
    assert (info.width, info.height) == (WIDTH, HEIGHT) and info.k[0] > 0
    # Both cameras are published, different views of the same instant (one stamp per render).
    wrist = wait_until(
        lambda: next((w for w in got["wrist"] if w.header.stamp == image.header.stamp), None),
        10,
        rig["spin"],
        "the wrist image of the same instant",
    )
    assert wrist.header.frame_id == "wrist_camera_link" and image.header.frame_id == "scene_camera_link"
    assert bytes(wrist.data) != bytes(image.data)
    # Images and joint states share the node clock: stamps within a second of each other.
    js_stamp = got["js"][-1].header.stamp
    delta = abs((image.header.stamp.sec + image.header.stamp.nanosec * 1e-9) - (js_stamp.sec + js_stamp.nanosec * 1e-9))
    assert delta < 1.0


def test_a_published_trajectory_moves_the_joints(rig):
    got = rig["got"]
    assert list(got["js"][-1].name) == list(JOINT_NAMES)
    goal = np.array([0.4, 0.3, -0.3, 0.2, 0.5, 0.3])
    msg = JointTrajectory(joint_names=list(JOINT_NAMES))
    msg.points = [JointTrajectoryPoint(positions=goal.tolist(), time_from_start=Duration(nanosec=300_000_000))]
    start = np.array(got["js"][-1].position)

    def reached():
        # Streamed, as a policy does: arm_node's watchdog holds the arm when commands stop.
        rig["traj_pub"].publish(msg)
        return np.all(np.abs(np.array(got["js"][-1].position) - goal) < 0.05)

    wait_until(reached, 15, rig["spin"], f"joints at {goal} ({rig['node'].tail(5)})")
    assert np.all(np.abs(goal - start) > 0.1), "the goal must be a real move"


def test_instruction_sets_the_task_and_success_is_published(rig):
    got = rig["got"]
    rig["instruction_pub"].publish(String(data="pick up the green cube"))
    wait_until(
        lambda: "task set from instruction: 'pick up the green cube'" in rig["node"].tail(40),
        10,
        rig["spin"],
        "the instruction to be heard",
    )
    count = len(got["success"])
    wait_until(lambda: len(got["success"]) >= count + 3, 10, rig["spin"], "task_success messages")
    assert got["success"][-1].data is False  # nothing has lifted the green cube


def test_reset_starts_a_new_episode_with_the_heard_task(rig):
    client = rig["reset"]
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(Trigger.Request())
    wait_until(future.done, 10, rig["spin"], "sim/reset")
    response = future.result()
    assert response.success and "seed 4" in response.message and "green" in response.message
    home = np.zeros(6)
    got = rig["got"]
    count = len(got["js"])
    wait_until(lambda: len(got["js"]) > count + 5, 10, rig["spin"], "joint_states after reset")
    assert np.all(np.abs(np.array(got["js"][-1].position) - home) < 0.05)
