"""Recording the MuJoCo sim over real DDS (camera, joint_states) while the test commands the arm (joint_command):
every frame of the dataset holds values the test saw on the wire."""

import json

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from mole_vla_ros import qos
from mole_vla_ros.data.lerobot_dataset import LeRobotDatasetReader
from mole_vla_ros.decode import image_rgb, joint_positions
from so100_driver.joints import JOINT_NAMES
from so100_driver.testing.ros_harness import NodeProcess, wait_until

pytestmark = pytest.mark.dds


def test_a_sim_recording_holds_the_published_states_commands_and_images(tmp_path):
    root = tmp_path / "ds"
    sim_args = ["--ros-args", "-p", "camera_width:=64", "-p", "camera_height:=48", "-p", "camera_fps:=15.0"]
    rec_args = ["--ros-args", "-p", f"root:={root}", "-p", "fps:=15", "-p", "task:=reach", "-p", "latency:=0.5"]
    rec_args += ["-p", "action_topic:=joint_command", "-p", "max_age:=0.2"]
    with (
        NodeProcess("so100_driver.sim.sim_node", sim_args) as sim,
        NodeProcess("mole_vla_ros.nodes.recorder_node", rec_args) as rec,
        rclpy.init(),
    ):
        node = rclpy.create_node("sim_probe")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        states, images, commands, status = [], [], [], []
        # Deep queues, as a recorder's: this probe spins only between its own calls, and a shallow queue would drop
        # states the recorder did receive (the frame's state then reads as "never published").
        node.create_subscription(
            JointState, "joint_states", lambda m: states.append(joint_positions(m, JOINT_NAMES)), qos.RECORD_STREAM
        )
        node.create_subscription(
            Image, "camera/scene/image_raw", lambda m: images.append(image_rgb(m)), qos.RECORD_IMAGES
        )
        node.create_subscription(String, "recorder/status", lambda m: status.append(json.loads(m.data)), 10)
        command_pub = node.create_publisher(JointState, "joint_command", qos.RELIABLE)
        clients = {n: node.create_client(Trigger, f"recorder/{n}") for n in ("start", "stop")}

        def spin_until(predicate, timeout, message):
            return wait_until(predicate, timeout, lambda t: executor.spin_once(timeout_sec=t), message)

        def call(name):
            future = clients[name].call_async(Trigger.Request())
            spin_until(future.done, 30.0, f"recorder/{name}\n{rec.tail()}")
            return future.result()

        def command(k):
            target = 0.2 * np.sin(0.3 * k + np.arange(6)) * np.array([1, 1, 1, 1, 1, 0.5])
            msg = JointState(name=list(JOINT_NAMES), position=target.tolist())
            msg.header.stamp = node.get_clock().now().to_msg()
            command_pub.publish(msg)
            commands.append(target)

        spin_until(lambda: len(images) > 3 and len(states) > 3, 60.0, f"sim streams\n{sim.tail()}")
        spin_until(
            lambda: clients["start"].service_is_ready() and command_pub.get_subscription_count() >= 2,
            30.0,
            f"recorder\n{rec.tail()}",
        )
        command(0)
        spin_until(lambda: call("start").success, 30.0, f"start\n{rec.tail()}")

        def commanding(_timeout):  # keeps the command stream at ~20 Hz while waiting (the arm moves meanwhile)
            executor.spin_once(timeout_sec=0.05)
            command(len(commands))

        wait_until(
            lambda: status and status[-1].get("frames", 0) >= 20,
            30.0,
            commanding,
            f"frames {status[-1:]}\n{rec.tail()}",
        )
        stop = call("stop")
        assert stop.success, stop.message + rec.tail()
        node.destroy_node()

    ds = LeRobotDatasetReader(root)
    assert len(ds) >= 15 and ds.task_of(0) == "reach"
    seen_states = np.array(states, dtype=np.float32)
    sent = np.array(commands, dtype=np.float32)
    for k in range(len(ds)):
        assert (np.abs(seen_states - ds.state[k]).max(axis=1) == 0).any(), f"frame {k}: state never published"
        assert (np.abs(sent - ds.action[k]).max(axis=1) == 0).any(), f"frame {k}: action never commanded"
    frames, seen = ds.frames("scene"), np.array(images, dtype=np.int16)
    for k in range(len(ds)):
        assert np.abs(seen - frames[k]).mean(axis=(1, 2, 3)).min() < 4, f"frame {k}: image never published"
    assert np.ptp(ds.state, axis=0).max() > 0.01  # the arm moved while recording
