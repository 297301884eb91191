"""A fake STS3215 bus + arm_node in a child process + a probe node, for tests over real DDS.

`with arm_rig(watchdog_timeout=0.3) as rig:` gives a dict: `bus` (FakeStsBus), `node` (NodeProcess), `probe`,
`state` (latest joint_states, their count, every /diagnostics array), `spin(step)`, `spin_for(seconds)`,
`traj_pub` (JointTrajectory), `cmd_pub` (joint_command). Keyword arguments become node parameters.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from so100_driver.arm_node import COMMAND_QOS, JOINT_STATES_QOS
from so100_driver.joints import JOINT_NAMES
from so100_driver.testing.fake_sts_bus import FakeStsBus
from so100_driver.testing.ros_harness import NodeProcess, wait_until

TRAJECTORY_TOPIC = "joint_trajectory_controller/joint_trajectory"


@contextlib.contextmanager
def arm_rig(**params: object) -> Iterator[dict]:
    """A fake bus + arm_node (child process, given parameters) + a probe node in a private rclpy context."""
    bus = FakeStsBus().start()
    args = ["--ros-args", "-p", f"port:={bus.port}"]
    for name, value in params.items():
        args += ["-p", f"{name}:={value}"]
    node = NodeProcess("so100_driver.arm_node", args).start()
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node("arm_node_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    state = {"js": None, "count": 0, "diag": []}

    def on_js(msg: JointState) -> None:
        state["js"], state["count"] = msg, state["count"] + 1

    probe.create_subscription(JointState, "joint_states", on_js, JOINT_STATES_QOS)
    probe.create_subscription(DiagnosticArray, "/diagnostics", lambda m: state["diag"].append(m), 10)
    rig = {
        "bus": bus,
        "node": node,
        "probe": probe,
        "state": state,
        "spin": lambda step: executor.spin_once(timeout_sec=step),
        "spin_for": lambda seconds: spin_for(executor, seconds),
        "traj_pub": probe.create_publisher(JointTrajectory, TRAJECTORY_TOPIC, COMMAND_QOS),
        "cmd_pub": probe.create_publisher(JointState, "joint_command", COMMAND_QOS),
    }
    try:
        try:
            wait_until(lambda: state["js"] is not None, 20, rig["spin"], "first joint_states")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; arm_node says:\n{node.tail(15)}") from None
        # A command published before DDS matched the node's subscription is lost (volatile): wait for the match.
        matched = lambda: rig["traj_pub"].get_subscription_count() and rig["cmd_pub"].get_subscription_count()  # noqa: E731
        wait_until(matched, 10, rig["spin"], "arm_node's command subscriptions")
        yield rig
    finally:
        code = node.stop()
        probe.destroy_node()
        executor.shutdown()
        rclpy.shutdown(context=context)
        bus.stop()
        if code != 0:
            raise RuntimeError(f"arm_node exited with {code}:\n{node.tail()}")


def spin_for(executor: SingleThreadedExecutor, seconds: float) -> None:
    """Process callbacks for `seconds` (spin_once returns after the first callback)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        executor.spin_once(timeout_sec=left)


def positions(rig: dict) -> np.ndarray:
    return np.array(rig["state"]["js"].position)


def trajectory(targets: Sequence[float], seconds: float) -> JointTrajectory:
    msg = JointTrajectory(joint_names=list(JOINT_NAMES))
    msg.points = [
        JointTrajectoryPoint(
            positions=[float(x) for x in targets],
            time_from_start=Duration(sec=int(seconds), nanosec=int((seconds % 1) * 1e9)),
        )
    ]
    return msg
