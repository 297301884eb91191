"""leader_node: publishes a leader arm's positions, and in teleop mode drives the follower through its arm_node.

Publishes `leader/joint_states` (sensor_msgs/JointState, follower joint space, rad) at `rate` Hz from a thread of
its own, and `/diagnostics`. With `teleop:=true` it also publishes each clean reading on `joint_command`, the
follower arm_node's direct position command: the follower therefore tracks the leader through its own safety
layer (limits, velocity/acceleration/step caps, e-stop) like any other command. When the leader stops answering
(a servo, or the whole port), no command is sent, so the follower's command watchdog holds it still.

Run: `python -m so100_driver.leader_node --ros-args -p port:=/dev/ttyACM1 -p calibration_file:=leader.json
-p teleop:=true` (the follower's arm_node on its own port, in the same namespace).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState

from so100_driver import params
from so100_driver.arm_node import COMMAND_QOS, JOINT_STATES_QOS
from so100_driver.backend import BackendError, JointReading
from so100_driver.joints import joints_for
from so100_driver.leader import LeaderArm
from so100_driver.node_runner import run

PARAMETERS = [
    *params.bus_parameters("/dev/ttyACM1", "the leader's calibration: LeRobot JSON as-is, or our YAML"),
    (
        "rate",
        100.0,
        ParameterDescriptor(
            description="leader read and publish rate, Hz",
            floating_point_range=[FloatingPointRange(from_value=10.0, to_value=500.0, step=0.0)],
            read_only=True,
        ),
    ),
    (
        "teleop",
        False,
        ParameterDescriptor(description="also command the follower (joint_command) with each reading", read_only=True),
    ),
    ("frame_id", "", ParameterDescriptor(description="header.frame_id of leader/joint_states", read_only=True)),
]


@dataclass(frozen=True)
class LeaderNodeConfig:
    port: str
    baudrate: int
    calibration_file: str
    arm_model: str
    rate: float
    teleop: bool
    frame_id: str


class LeaderNode(Node):
    """Reads the leader in its own thread; publishes its state and, in teleop, the follower's command."""

    def __init__(self, leader: LeaderArm | None = None, **node_kwargs: object) -> None:
        super().__init__(node_kwargs.pop("node_name", "leader_node"), **node_kwargs)
        self.declare_parameters("", PARAMETERS)
        self.config = LeaderNodeConfig(**{name: self.get_parameter(name).value for name, _v, _d in PARAMETERS})
        if leader is None:
            if not self.config.calibration_file:
                raise ValueError("leader_node needs calibration_file (the leader's LeRobot JSON or our YAML)")
            leader = LeaderArm.open(
                self.config.port,
                self.config.baudrate,
                self.config.calibration_file,
                joints_for(self.config.arm_model),
            )
        self.leader = leader
        self.state_pub = self.create_publisher(JointState, "leader/joint_states", JOINT_STATES_QOS)
        self.command_pub = (
            self.create_publisher(JointState, "joint_command", COMMAND_QOS) if self.config.teleop else None
        )
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._faults: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-read", daemon=True)
        self._thread.start()
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(
            f"leader_node up: {self.config.port} at {self.config.rate:g} Hz"
            + (", teleop: commanding the follower on joint_command" if self.config.teleop else "")
        )

    def _run(self) -> None:
        period = 1.0 / self.config.rate
        next_tick = time.monotonic()
        while not self._stop.wait(max(0.0, next_tick - time.monotonic())):
            self._cycle()
            next_tick += period
            now = time.monotonic()
            if next_tick <= now:  # fell behind: resume from now rather than burst
                next_tick = now + period

    def _cycle(self) -> None:
        try:
            reading: JointReading | None = self.leader.read()
            faults = dict(reading.faults)
        except BackendError as exc:
            reading, faults = None, {name: str(exc) for name in self.leader.joint_names}
        if faults != self._faults:
            self._report(faults)
        if reading is None or faults:
            return  # nothing trustworthy to send: in teleop the follower's watchdog now holds it
        msg = JointState(name=list(self.leader.joint_names), position=reading.positions.tolist())
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.config.frame_id
        self.state_pub.publish(msg)
        if self.command_pub is not None:
            self.command_pub.publish(JointState(header=msg.header, name=msg.name, position=msg.position))

    def _report(self, faults: dict[str, str]) -> None:
        for joint, message in faults.items():
            if self._faults.get(joint) != message:
                self.get_logger().error(f"leader {joint}: {message}; no command sent until it answers")
        if self._faults and not faults:
            self.get_logger().info("leader answers again: publishing (and commanding) resumes")
        self._faults = faults
        self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        faults = dict(self._faults)
        for name in self.leader.joint_names:
            status = DiagnosticStatus(
                name=f"leader_node: {name}", hardware_id=f"leader servo {self.leader.servo_ids[name]}"
            )
            status.level = DiagnosticStatus.ERROR if name in faults else DiagnosticStatus.OK
            status.message = faults.get(name, "ok")
            array.status.append(status)
        self.diagnostics_pub.publish(array)

    def stop(self) -> None:
        """End the reading thread (node_runner calls this before the executor stops)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def destroy_node(self) -> None:
        self.stop()
        self.leader.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run(
        LeaderNode, args, executor=lambda _nodes: SingleThreadedExecutor(), fatal=(BackendError, ValueError, OSError)
    )


if __name__ == "__main__":
    raise SystemExit(main())
