"""arm_node: the ROS 2 face of the SO-100/SO-101 arm, over any JointBackend (Feetech servos or MuJoCo).

Topics: publishes `joint_states` (sensor_msgs/JointState) and `/diagnostics`; subscribes
`joint_trajectory_controller/joint_trajectory` (trajectory_msgs/JointTrajectory, JointTrajectoryController's topic
interface) and `joint_command` (sensor_msgs/JointState: names + positions, a direct target).
Services: `enable_torque` (std_srvs/SetBool), `stop`, `estop`, `reset_estop` (std_srvs/Trigger).
Where control_msgs imports (a full ROS install), also the action
`joint_trajectory_controller/follow_joint_trajectory` (control_msgs/FollowJointTrajectory).

All logic lives in `arm.ArmController` / `safety.SafetyLayer` / `follow_trajectory`; this file converts messages.
Run against a serial port: `python -m so100_driver.arm_node --ros-args -p port:=/dev/ttyACM0`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from so100_driver import params, qos
from so100_driver.arm import ArmController, CommandRejectedError, ControlLoop, StepResult
from so100_driver.backend import BackendError, JointBackend
from so100_driver.executors import HandoffMultiThreadedExecutor
from so100_driver.follow_trajectory import trajectory_from_message
from so100_driver.joints import joints_for
from so100_driver.node_runner import run
from so100_driver.safety import SafetyLayer, SafetyLimits

try:  # Only in full ROS installs; the adapter below is a thin shell over follow_trajectory.
    from control_msgs.action import FollowJointTrajectory
    from rclpy.action import ActionServer, CancelResponse, GoalResponse
except ImportError:  # pragma: no cover - depends on the installation
    FollowJointTrajectory = None

# joint_states is consumed by robot_state_publisher, whose subscription is RELIABLE: a best-effort
# (sensor-data) publisher would not match it and rviz would show nothing. Depth 10 absorbs a slow consumer.
JOINT_STATES_QOS = qos.RELIABLE
# Commands must not be dropped silently: reliable, depth 10.
COMMAND_QOS = qos.RELIABLE


def _float(description: str, low: float, high: float) -> ParameterDescriptor:
    return params.floating(description, low, high, read_only=True)


PARAMETERS = [
    *params.bus_parameters(
        "/dev/ttyACM0", "calibration YAML or LeRobot JSON; empty = config/calibration/<arm_model>_default.yaml"
    ),
    ("frame_id", "", ParameterDescriptor(description="header.frame_id of joint_states", read_only=True)),
    (
        "publish_rate",
        50.0,
        _float("joint_states publish rate, Hz (at most control_rate: each is a fresh read)", 1.0, 500.0),
    ),
    ("control_rate", 100.0, _float("control loop rate (read, interpolate, write), Hz", 5.0, 1000.0)),
    ("diagnostics_rate", 2.0, _float("/diagnostics publish rate, Hz (faults are also published at once)", 0.1, 50.0)),
    ("watchdog_timeout", 0.5, _float("hold when no command arrives for this long, s", 0.02, 60.0)),
    ("max_velocity_scale", 1.0, _float("fraction of each joint's velocity cap from joints.py", 0.01, 1.0)),
    ("max_acceleration", 20.0, _float("joint acceleration cap, rad/s^2", 0.1, 1000.0)),
    ("max_step", 0.2, _float("largest change between consecutive commands, rad", 0.001, 1.0)),
    ("torque_on_start", True, ParameterDescriptor(description="enable torque (holding) at start", read_only=True)),
    (
        "disable_torque_on_exit",
        False,
        ParameterDescriptor(
            description="release torque on exit (the SO-100 then falls under gravity; default keeps holding)",
            read_only=True,
        ),
    ),
]


@dataclass(frozen=True)
class ArmNodeConfig:
    port: str
    baudrate: int
    calibration_file: str
    arm_model: str
    frame_id: str
    publish_rate: float
    control_rate: float
    diagnostics_rate: float
    watchdog_timeout: float
    max_velocity_scale: float
    max_acceleration: float
    max_step: float
    torque_on_start: bool
    disable_torque_on_exit: bool


class ArmNode(Node):
    """Publishes joint states, follows trajectories safely, serves torque/stop/e-stop."""

    def __init__(self, backend: JointBackend | None = None, **node_kwargs: object) -> None:
        super().__init__(node_kwargs.pop("node_name", "arm_node"), **node_kwargs)
        self.declare_parameters("", PARAMETERS)
        self.config = ArmNodeConfig(**{name: self.get_parameter(name).value for name, _v, _d in PARAMETERS})
        joints = joints_for(self.config.arm_model)
        self.joint_ids = {j.name: j.servo_id for j in joints}
        if backend is None:
            backend = self._feetech_backend(joints)
        limits = SafetyLimits.from_joints(
            joints, self.config.max_velocity_scale, self.config.max_acceleration, self.config.max_step
        )
        self.controller = ArmController(backend, SafetyLayer(limits, self.config.watchdog_timeout))
        # The control thread, subscriptions, services and the action thread all touch the controller (and the
        # bus): the loop's one lock guards it.
        self.loop = ControlLoop(self.controller, self.config.control_rate, self._on_step)
        self._lock = self.loop.lock
        publish_rate = min(self.config.publish_rate, self.config.control_rate)
        if publish_rate < self.config.publish_rate:
            self.get_logger().warning(f"publish_rate capped at control_rate ({publish_rate:g} Hz): one state per read")
        self._publish_period = 1.0 / publish_rate
        self._next_publish = 0.0
        self._last_step: StepResult | None = None
        self._reported_faults: dict[str, str] = {}
        try:
            reading = self.controller.start(torque=self.config.torque_on_start)
        except BackendError:
            self.controller.shutdown(disable_torque=False)
            raise
        if reading.faults:
            self.get_logger().error(f"joint faults at start: {reading.faults}")

        self.joint_state_pub = self.create_publisher(JointState, "joint_states", JOINT_STATES_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(
            JointTrajectory, "joint_trajectory_controller/joint_trajectory", self._on_trajectory, COMMAND_QOS
        )
        self.create_subscription(JointState, "joint_command", self._on_joint_command, COMMAND_QOS)
        self.create_service(SetBool, "enable_torque", self._on_enable_torque)
        self.create_service(Trigger, "stop", self._on_stop)
        self.create_service(Trigger, "estop", self._on_estop)
        self.create_service(Trigger, "reset_estop", self._on_reset_estop)
        self.create_timer(1.0 / self.config.diagnostics_rate, self._publish_diagnostics)
        self._action_server = None
        if FollowJointTrajectory is not None:
            self._action_server = self._make_action_server()
        self.loop.start()
        self.get_logger().info(
            f"arm_node up: {len(joints)} joints, control {self.config.control_rate:g} Hz, "
            f"joint_states {self.config.publish_rate:g} Hz, watchdog {self.config.watchdog_timeout:g} s"
        )

    @property
    def has_action_server(self) -> bool:
        return self._action_server is not None

    # -- construction helpers -------------------------------------------------------------------------------
    def _feetech_backend(self, joints: tuple) -> JointBackend:
        from so100_driver.calibration import default_calibration_path, load_calibration
        from so100_driver.feetech_backend import FeetechBackend

        path = Path(self.config.calibration_file or default_calibration_path(self.config.arm_model))
        calibration = load_calibration(path)
        self.get_logger().info(f"opening {self.config.port} at {self.config.baudrate} baud, calibration {path}")
        return FeetechBackend.open(self.config.port, self.config.baudrate, calibration, joints)

    # -- control and publishing -----------------------------------------------------------------------------
    def _on_step(self, result: StepResult, ticked: bool) -> None:
        """After each control step, in the control thread: publish fresh states on schedule, report faults."""
        self._last_step = result
        if ticked:
            now = time.monotonic()
            # Ticks run a little late by varying amounts: half a control period of slack keeps "every 2nd tick".
            if now >= self._next_publish - 0.5 * self.loop.period:
                self._publish_joint_states(result)
                # An absolute schedule holds the average rate under jitter; after a stall it restarts, no burst.
                self._next_publish += self._publish_period
                if self._next_publish < now:
                    self._next_publish = now + self._publish_period
        if result.faults != self._reported_faults:
            for joint, message in result.faults.items():
                if self._reported_faults.get(joint) != message:
                    self.get_logger().error(f"fault on {joint}: {message}; the arm holds")
            for joint in set(self._reported_faults) - set(result.faults):
                self.get_logger().info(f"{joint} answers again; commands accepted once all faults clear")
            self._reported_faults = dict(result.faults)
            self._publish_diagnostics()

    def _publish_joint_states(self, result: StepResult) -> None:
        reading = result.reading
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.config.frame_id
        msg.name = list(self.controller.joint_names)
        msg.position = reading.positions.tolist()
        msg.velocity = reading.velocities.tolist()
        msg.effort = reading.efforts.tolist()
        self.joint_state_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        result = self._last_step
        faults = result.faults if result is not None else {}
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        positions = result.reading.positions if result is not None else None
        for i, name in enumerate(self.controller.joint_names):
            status = DiagnosticStatus(name=f"arm_node: {name}", hardware_id=f"servo {self.joint_ids.get(name, '?')}")
            if name in faults:
                status.level, status.message = DiagnosticStatus.ERROR, faults[name]
            else:
                status.level, status.message = DiagnosticStatus.OK, "ok"
            if positions is not None:
                status.values.append(KeyValue(key="position_rad", value=f"{positions[i]:.4f}"))
            array.status.append(status)
        overall = DiagnosticStatus(name="arm_node: controller", hardware_id="arm")
        safety = self.controller.safety
        if safety.estopped:
            overall.level, overall.message = DiagnosticStatus.ERROR, f"e-stop latched: {safety.estop_reason}"
        elif faults:
            overall.level, overall.message = (
                DiagnosticStatus.ERROR,
                "holding: " + "; ".join(f"{j}: {m}" for j, m in sorted(faults.items())),
            )
        else:
            overall.level = DiagnosticStatus.OK
            overall.message = "holding" if self.controller.holding else "following commands"
        overall.values.append(KeyValue(key="hold_reason", value=str(self.controller.hold_reason)))
        array.status.append(overall)
        self.diagnostics_pub.publish(array)

    # -- commands ---------------------------------------------------------------------------------------------
    def _reject(self, what: str, exc: Exception) -> None:
        self.get_logger().error(f"{what} rejected: {exc}; the arm holds")
        self.loop.command(lambda: self.controller.stop(f"{what} rejected: {exc}"))

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        try:

            def change() -> None:
                trajectory = trajectory_from_message(msg, self.controller.clock(), self._ros_now())
                self.controller.set_trajectory(trajectory)

            self.loop.command(change)  # on the bus now, not at the next tick
        except CommandRejectedError as exc:
            self._reject("trajectory", exc)

    def _on_joint_command(self, msg: JointState) -> None:
        try:
            if len(msg.position) != len(msg.name):
                raise CommandRejectedError(f"joint_command has {len(msg.position)} positions for {len(msg.name)} names")
            self.loop.command(lambda: self.controller.set_target(list(msg.name), list(msg.position)))
        except CommandRejectedError as exc:
            self._reject("joint_command", exc)

    def _on_enable_torque(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        try:
            with self._lock:
                self.controller.set_torque(request.data)
            response.success, response.message = True, f"torque {'enabled' if request.data else 'disabled'}"
        except BackendError as exc:
            response.success, response.message = False, f"torque change failed: {exc}"
            self.get_logger().error(response.message)
        return response

    def _on_stop(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.loop.command(lambda: self.controller.stop("stop service"))
        response.success, response.message = True, "holding position"
        return response

    def _on_estop(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.loop.command(lambda: self.controller.estop("estop service"))
        self.get_logger().warning("software e-stop latched; call reset_estop to accept commands again")
        self._publish_diagnostics()
        response.success, response.message = True, "e-stop latched: holding until reset_estop"
        return response

    def _on_reset_estop(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            self.controller.reset_estop()
        response.success, response.message = True, "e-stop reset: commands accepted"
        return response

    def _ros_now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- FollowJointTrajectory (full ROS installs only) ---------------------------------------------------------
    def _make_action_server(self) -> object:  # pragma: no cover - needs control_msgs
        from so100_driver.follow_trajectory import INVALID_GOAL, GoalMonitor, Tolerances

        def on_goal(_goal: object) -> object:
            return GoalResponse.ACCEPT

        def execute(goal_handle: object) -> object:
            goal = goal_handle.request
            result = FollowJointTrajectory.Result()
            try:
                with self._lock:
                    trajectory = trajectory_from_message(goal.trajectory, self.controller.clock(), self._ros_now())
                    tolerances = Tolerances.from_messages(
                        trajectory.joint_names,
                        goal.path_tolerance,
                        goal.goal_tolerance,
                        goal.goal_time_tolerance.sec + goal.goal_time_tolerance.nanosec * 1e-9,
                    )
                    self.controller.set_trajectory(trajectory)
                    end = trajectory.start_time + trajectory.points[-1].time_from_start
            except CommandRejectedError as exc:
                goal_handle.abort()
                result.error_code, result.error_string = INVALID_GOAL, str(exc)
                return result
            cols = [self.controller.joint_names.index(n) for n in trajectory.joint_names]
            monitor = GoalMonitor(trajectory.joint_names, end, tolerances)
            while rclpy.ok():
                if goal_handle.is_cancel_requested:
                    with self._lock:
                        self.controller.stop("goal cancelled")
                    goal_handle.canceled()
                    return result
                step = self._last_step
                if step is not None and step.command is not None:
                    verdict = monitor.check(self.controller.clock(), step.command[cols], step.reading.positions[cols])
                    if step.faults:
                        verdict = (INVALID_GOAL, f"joint fault: {step.faults}")
                    if verdict is not None:
                        code, message = verdict
                        result.error_code, result.error_string = code, message
                        if code == 0:
                            goal_handle.succeed()
                        else:
                            with self._lock:
                                self.controller.stop(message)
                            goal_handle.abort()
                        return result
                time.sleep(1.0 / self.config.control_rate)
            goal_handle.abort()
            return result

        return ActionServer(
            self,
            FollowJointTrajectory,
            "joint_trajectory_controller/follow_joint_trajectory",
            execute_callback=execute,
            goal_callback=on_goal,
            cancel_callback=lambda _h: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup(),
        )

    # -- exit -------------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """End the control thread (node_runner calls this before the executor stops); the servos keep their goal."""
        loop = getattr(self, "loop", None)
        if loop is not None:
            loop.stop()

    def destroy_node(self) -> None:
        """Hold, then release torque if configured, then close the backend: on every exit path."""
        controller = getattr(self, "controller", None)  # absent when the constructor failed before it
        loop = getattr(self, "loop", None)
        try:
            if loop is not None:
                loop.stop()  # no step may race the final hold below
            if controller is not None:
                with self._lock:
                    controller.shutdown(disable_torque=self.config.disable_torque_on_exit)
        except BackendError as exc:
            self.get_logger().error(f"could not hold/release the arm on exit: {exc}")
        finally:
            super().destroy_node()


def _executor(nodes: Sequence[Node]) -> Executor:
    # A multi-threaded executor hands every callback to a pool thread: one more wake-up between a command and
    # the bus. Only the action server (a long-running execute callback) needs it.
    if any(getattr(node, "has_action_server", False) for node in nodes):
        return HandoffMultiThreadedExecutor(num_threads=3)
    return SingleThreadedExecutor()


def main(args: list[str] | None = None) -> int:
    return run(ArmNode, args, executor=_executor, fatal=(BackendError,))


if __name__ == "__main__":
    raise SystemExit(main())
