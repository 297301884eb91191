"""ChunkExecutorNode: streams queued action chunks to the arm at the control rate and asks for the next chunk.

mole/action_chunk (ActionChunk) --> ChunkQueue (execution/chunk_queue.py) --> joint_command (JointState), or
                                                        joint_trajectory_controller/joint_trajectory (JointTrajectory),
                                       or, per accepted chunk, a joint_trajectory_controller/follow_joint_trajectory
                                       goal (control_msgs FollowJointTrajectory; execution/follow_joint_trajectory.py)
mole/chunk_request (Header, stamp = when asked) <-- when the queue runs low
mole/chunk_rejected (String, JSON {"chunk_id", "instruction", "reason"}) <-- a chunk refused (limits, non-finite,
                                                        collision, malformed); the policy node reports it to its goal

The control timer has its own callback group and only takes a short lock, so a slow chunk callback (or the policy
in another process) never delays a command. When the queue runs dry it repeats the last command (the arm holds);
after `hold_timeout` of holding it stops streaming and leaves the arm on its last goal.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Header, String
from trajectory_msgs.msg import JointTrajectory

from mole_msgs.msg import ActionChunk
from mole_vla_ros import conversions, qos
from mole_vla_ros.execution.chunk_queue import (
    BlendMode,
    ChunkQueue,
    ExecutionMode,
    QueueConfig,
    StaleClock,
    ThresholdMode,
    rate_limited,
)
from mole_vla_ros.execution.collision_check import CHECKERS, ChunkChecker, make_checker
from mole_vla_ros.execution.follow_joint_trajectory import (
    GoalBook,
    TrajectoryGoal,
    follow_joint_trajectory_type,
    plan_goals,
)
from so100_driver import params as _params
from so100_driver.joints import JOINT_NAMES, joints_for
from so100_driver.node_runner import run

OUTPUT_MODES = ("command", "trajectory", "follow_joint_trajectory")
# Parameters the queue reads; they may change at runtime (validated by building a new QueueConfig).
QUEUE_PARAMS = (
    "mode",
    "threshold",
    "blend_mode",
    "blend_weight",
    "request_timeout",
    "limit_tolerance",
    "stale_clock",
    "threshold_mode",
    "threshold_min",
    "latency_margin",
)


def rejection_message(chunk_id: int, instruction: str, reason: str) -> str:
    """The mole/chunk_rejected payload: small JSON on a std_msgs/String, so no new message type is needed."""
    return json.dumps({"chunk_id": int(chunk_id), "instruction": instruction, "reason": reason})


@dataclass(frozen=True)
class ExecutorParams:
    control_rate: float
    fps: float
    output_mode: str
    hold_timeout: float
    joint_names: tuple[str, ...]
    trajectory_points: int
    arm: str
    max_velocity_scale: float


class ChunkExecutorNode(Node):
    def __init__(self, **kwargs: object) -> None:
        super().__init__("chunk_executor", **kwargs)
        self.declare_parameters(
            "",
            [
                ("control_rate", 50.0, _params.floating("Command stream rate, Hz.", 1.0, 500.0, read_only=True)),
                ("fps", 30.0, _params.floating("Chunk step rate used when a chunk carries no times, Hz.", 1.0, 200.0)),
                (
                    "threshold",
                    0.5,
                    _params.floating(
                        "Request a chunk when remaining <= threshold x chunk (latency mode: at the latest).", 0.01, 1.0
                    ),
                ),
                ("blend_mode", "weighted", _params.choice("How overlaps merge.", tuple(m.value for m in BlendMode))),
                ("blend_weight", 0.7, _params.floating("Weight of the NEW chunk in weighted mode.", 0.0, 1.0)),
                ("mode", "async", _params.choice("Execution mode.", tuple(m.value for m in ExecutionMode))),
                ("output_mode", "command", _params.choice("Arm interface.", OUTPUT_MODES, read_only=True)),
                (
                    "follow_joint_trajectory_action",
                    "joint_trajectory_controller/follow_joint_trajectory",
                    _params.text("follow_joint_trajectory mode: the controller's action.", read_only=True),
                ),
                (
                    "gripper_follow_joint_trajectory_action",
                    "",
                    _params.text(
                        "follow_joint_trajectory mode: send the gripper as its own goal on this action (e.g. "
                        "gripper_controller/follow_joint_trajectory); empty = one goal with all six joints.",
                        read_only=True,
                    ),
                ),
                ("hold_timeout", 2.0, _params.floating("Holding longer than this stops the stream, s.", 0.1, 3600.0)),
                (
                    "gripper_trajectory_topic",
                    "",
                    _params.text(
                        "trajectory mode: send the gripper on this topic (e.g. gripper_controller/joint_trajectory) "
                        "and the five arm joints alone on joint_trajectory_controller/joint_trajectory; empty = one "
                        "message with all six.",
                        read_only=True,
                    ),
                ),
                (
                    "max_velocity_scale",
                    1.0,
                    _params.floating("Fraction of each joint's velocity cap the stream may use.", 0.01, 1.0, True),
                ),
                (
                    "limit_tolerance",
                    0.1,
                    _params.floating("Clamp actions this far outside limits, reject beyond, rad.", 0.0, 1.0),
                ),
                ("request_timeout", 1.0, _params.floating("Repeat an unanswered chunk request after, s.", 0.05, 60.0)),
                (
                    "stale_clock",
                    "executed",
                    _params.choice(
                        "How a chunk's overtaken actions are counted: executed (time since its observation minus the "
                        "time the arm held still) or wall (all the time since its observation).",
                        tuple(c.value for c in StaleClock),
                    ),
                ),
                (
                    "threshold_mode",
                    "fixed",
                    _params.choice(
                        "fixed (request below threshold x chunk) or latency (request when the queued time falls under "
                        "the measured chunk latency + latency_margin, clamped to [threshold_min, threshold] x chunk).",
                        tuple(m.value for m in ThresholdMode),
                    ),
                ),
                (
                    "threshold_min",
                    0.1,
                    _params.floating("latency threshold mode: request at the latest below this x chunk.", 0.0, 1.0),
                ),
                (
                    "latency_margin",
                    0.1,
                    _params.floating("latency threshold mode: margin added to the measured latency, s.", 0.0, 5.0),
                ),
                ("joint_names", list(JOINT_NAMES), _params.text("Output joint names, in the joint table's order.")),
                ("trajectory_points", 10, _params.integer("Points per trajectory message.", 1, 200, read_only=True)),
                (
                    "arm_model",
                    "so100",
                    _params.choice("Joint table whose limits apply.", ("so100", "so101"), read_only=True),
                ),
                (
                    "collision_check",
                    False,
                    ParameterDescriptor(
                        description="Reject chunks with a waypoint in collision (self, table, obstacles).",
                        read_only=True,
                    ),
                ),
                ("collision_checker", "mujoco", _params.choice("Collision checker.", CHECKERS, read_only=True)),
            ],
        )
        self.params = self._read_params()
        self._max_velocity = self.params.max_velocity_scale * np.array(
            [j.max_velocity for j in joints_for(self.params.arm)]
        )
        self._last_sent: np.ndarray | None = None
        self._lock = threading.Lock()
        self.queue = ChunkQueue(self._queue_config({}))
        self.stats = {"chunks": 0, "rejected": 0, "stale_dropped": 0, "requests": 0, "collisions": 0}
        # Built once (the MuJoCo model compiles in ~50 ms); checked in the chunk callback, never in the control tick.
        self.checker: ChunkChecker | None = None
        if self.get_parameter("collision_check").value:
            self.checker = make_checker(self.get_parameter("collision_checker").value, self.params.arm)
        self.last_reject = ""
        self.tick_times: deque[float] = deque(maxlen=5000)  # monotonic s, for jitter diagnostics and benchmarks
        self._streaming = True
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._request_pub = self.create_publisher(Header, "mole/chunk_request", qos.RELIABLE)
        self._goal_output: FollowJointTrajectoryOutput | None = None
        if self.params.output_mode == "follow_joint_trajectory":
            # Fails here, at start-up, naming control_msgs when it is not installed (never on the first chunk).
            self._goal_output = FollowJointTrajectoryOutput(
                self,
                self.get_parameter("follow_joint_trajectory_action").value,
                self.get_parameter("gripper_follow_joint_trajectory_action").value,
            )
            self._command_pub = None
        elif self.params.output_mode == "command":
            self._command_pub = self.create_publisher(JointState, "joint_command", qos.RELIABLE)
        else:
            self._command_pub = self.create_publisher(
                JointTrajectory, "joint_trajectory_controller/joint_trajectory", qos.RELIABLE
            )
        # ros2_control stacks run the gripper on its own controller: a stock JointTrajectoryController over the five
        # arm joints rejects a message that names the gripper, so the gripper column can go to its own topic.
        gripper_topic = self.get_parameter("gripper_trajectory_topic").value
        self._gripper_pub = (
            self.create_publisher(JointTrajectory, gripper_topic, qos.RELIABLE)
            if gripper_topic and self.params.output_mode == "trajectory"
            else None
        )
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", qos.RELIABLE)
        self._rejected_pub = self.create_publisher(String, "mole/chunk_rejected", qos.RELIABLE)
        self.create_subscription(
            ActionChunk,
            "mole/action_chunk",
            self._on_chunk,
            qos.RELIABLE,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        self.create_timer(
            1.0 / self.params.control_rate, self._on_tick, callback_group=MutuallyExclusiveCallbackGroup()
        )
        self.create_timer(1.0, self._publish_diagnostics)

    # ---- parameters ----

    def _read_params(self) -> ExecutorParams:
        names = tuple(self.get_parameter("joint_names").value)
        if len(names) != len(JOINT_NAMES) or len(set(names)) != len(names):
            raise ValueError(f"joint_names must be {len(JOINT_NAMES)} distinct names, got {list(names)}")
        return ExecutorParams(
            control_rate=self.get_parameter("control_rate").value,
            fps=self.get_parameter("fps").value,
            output_mode=self._checked_choice("output_mode", OUTPUT_MODES),
            hold_timeout=self.get_parameter("hold_timeout").value,
            joint_names=names,
            trajectory_points=self.get_parameter("trajectory_points").value,
            arm=self.get_parameter("arm_model").value,
            max_velocity_scale=self.get_parameter("max_velocity_scale").value,
        )

    def _checked_choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.get_parameter(name).value
        if value not in choices:
            raise ValueError(f"parameter {name}={value!r} must be one of {list(choices)}")
        return value

    def _queue_config(self, overrides: dict[str, object]) -> QueueConfig:
        values = {name: overrides.get(name, self.get_parameter(name).value) for name in QUEUE_PARAMS}
        return QueueConfig(arm=self.get_parameter("arm_model").value, **values)

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        overrides = {p.name: p.value for p in parameters if p.name in QUEUE_PARAMS}
        updates = {p.name: p.value for p in parameters if p.name in ("fps", "hold_timeout", "joint_names")}
        if "joint_names" in updates:
            names = tuple(updates["joint_names"])
            if len(names) != len(JOINT_NAMES) or len(set(names)) != len(names):
                return SetParametersResult(successful=False, reason=f"joint_names must be 6 distinct names: {names}")
            updates["joint_names"] = names
        try:
            config = self._queue_config(overrides)
        except ValueError as err:
            return SetParametersResult(successful=False, reason=str(err))
        with self._lock:
            self.queue.config = config
            self.params = dataclasses.replace(self.params, **updates)
        return SetParametersResult(successful=True)

    # ---- callbacks ----

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_chunk(self, msg: ActionChunk) -> None:
        try:
            chunk = conversions.parse_action_chunk(msg)
            offsets = chunk.offsets
            if np.all(offsets == 0):
                offsets = np.arange(1, len(offsets) + 1) / self.params.fps
        except ValueError as err:
            self._reject(msg.chunk_id, msg.instruction, f"malformed: {err}")
            return
        collision = None
        if self.checker is not None and np.all(np.isfinite(chunk.positions)):  # non-finite: the queue's reason
            collision = self.checker.check(chunk.positions)
        if collision is not None:
            self.stats["collisions"] += 1
            self._reject(chunk.chunk_id, msg.instruction, f"collision at {collision.describe()}")
            return
        with self._lock:
            result = self.queue.push(chunk.stamp, offsets, chunk.positions, now=self._now())
            self._streaming = True
        if not result.accepted:
            self._reject(chunk.chunk_id, msg.instruction, result.reason)
            return
        self.stats["chunks"] += 1
        self.stats["stale_dropped"] += result.dropped_stale
        if self._goal_output is not None:
            self._send_goals()

    def _send_goals(self) -> None:
        """The merged plan from now on as FollowJointTrajectory goal(s), superseding the previous ones."""
        now = self._now()
        with self._lock:
            times, actions = self.queue.upcoming(now, len(self.queue))
            previous = self._last_sent
        if len(times) == 0:
            return
        actions = rate_limited(previous, times, actions, now, self._max_velocity)
        self._goal_output.send(
            plan_goals(times, actions, now, self.params.joint_names, *self._goal_output.actions), now
        )

    def _reject(self, chunk_id: int, instruction: str, reason: str) -> None:
        """Log, count and announce a refused chunk: the policy node puts the reason in its goal's feedback."""
        self.stats["rejected"] += 1
        report = f"chunk {chunk_id} rejected, holding: {reason}"
        # Logged before the diagnostics timer (another thread) can see it: whoever reads the diagnostics finds the log.
        self.get_logger().error(report)
        self.last_reject = report
        self._rejected_pub.publish(String(data=rejection_message(chunk_id, instruction, reason)))

    def _on_tick(self) -> None:
        self.tick_times.append(time.monotonic())
        now = self._now()
        trajectory = self.params.output_mode == "trajectory"
        goals = self._goal_output is not None
        with self._lock:
            tick = self.queue.pop(now)
            request = self.queue.needs_chunk(now)
            if request:
                self.queue.mark_requested(now)
            upcoming = self.queue.upcoming(now, self.params.trajectory_points) if trajectory else None
            if tick.holding and tick.hold_duration > self.params.hold_timeout:
                self._streaming = False
            streaming = self._streaming
        stamp = conversions.seconds_to_stamp(now)
        if request:
            self.stats["requests"] += 1
            self._request_pub.publish(Header(stamp=stamp))
        if tick.positions is None or not streaming:
            return
        if goals:  # the controller runs the goal sent with the chunk; the tick only tracks where the plan is
            self._last_sent = tick.positions
            return
        names = self.params.joint_names
        period = 1.0 / self.params.control_rate
        if not trajectory:
            (command,) = rate_limited(
                self._last_sent, np.array([now + period]), tick.positions[None, :], now, self._max_velocity
            )
            self._last_sent = command
            self._command_pub.publish(conversions.positions_to_joint_state(command, names, stamp))
            return
        times, actions = upcoming
        if len(times) == 0:  # holding: one point at the last command, one control period ahead
            times, actions = np.array([now + period]), tick.positions[None, :]
        actions = rate_limited(self._last_sent, times, actions, now, self._max_velocity)
        self._last_sent = actions[0]
        if self._gripper_pub is None:
            self._command_pub.publish(conversions.build_joint_trajectory(actions, times - now, stamp, names))
            return
        arm, gripper = list(range(len(names) - 1)), [len(names) - 1]
        self._command_pub.publish(conversions.build_joint_trajectory(actions[:, arm], times - now, stamp, names[:-1]))
        self._gripper_pub.publish(
            conversions.build_joint_trajectory(actions[:, gripper], times - now, stamp, names[-1:])
        )

    def jitter_p99(self) -> float:
        """99th percentile of |tick period - nominal period| over the recent ticks, seconds."""
        ticks = np.array(self.tick_times)
        if len(ticks) < 3:
            return 0.0
        return float(np.percentile(np.abs(np.diff(ticks) - 1.0 / self.params.control_rate), 99))

    def _publish_diagnostics(self) -> None:
        now = self._now()
        with self._lock:
            queued, remaining = len(self.queue), self.queue.remaining(now)
            threshold, latency = self.queue.threshold_fraction(), self.queue.latency
            holding = remaining == 0
            streaming = self._streaming
        status = DiagnosticStatus(name="mole/chunk_executor", hardware_id="chunk_executor")
        if self.last_reject:
            status.level, status.message = DiagnosticStatus.ERROR, self.last_reject
            self.last_reject = ""
        elif holding:
            status.level = DiagnosticStatus.WARN
            status.message = "queue dry: holding last command" if streaming else "idle: no chunk, stream stopped"
        else:
            status.level, status.message = DiagnosticStatus.OK, "streaming"
        values = {
            "queued_actions": queued,
            "mode": self.queue.config.mode.value,
            "request_threshold": f"{threshold:.3f}",
            "chunk_latency_s": "" if latency is None else f"{latency:.3f}",
            "jitter_p99_ms": f"{self.jitter_p99() * 1e3:.3f}",
            **self.stats,
        }
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = conversions.seconds_to_stamp(now)
        self._diag_pub.publish(msg)


class FollowJointTrajectoryOutput:
    """Thin rclpy glue: TrajectoryGoals -> FollowJointTrajectory action goals; the decisions are in GoalBook."""

    def __init__(self, node: Node, arm_action: str, gripper_action: str) -> None:
        from rclpy.action import ActionClient

        self._type = follow_joint_trajectory_type()  # RuntimeError naming control_msgs when missing
        self._node = node
        self.actions = (arm_action, gripper_action)
        self._clients = {a: ActionClient(node, self._type, a) for a in self.actions if a}
        self._book = GoalBook()
        self._lock = threading.Lock()

    def send(self, goals: list[TrajectoryGoal], now: float) -> None:
        stamp = conversions.seconds_to_stamp(now)
        for goal in goals:
            client = self._clients[goal.action]
            if not client.server_is_ready():
                self._node.get_logger().error(f"no FollowJointTrajectory server on {goal.action}: chunk not sent")
                continue
            message = self._type.Goal()
            message.trajectory = conversions.build_joint_trajectory(
                goal.positions, goal.time_from_start, stamp, goal.joint_names
            )
            with self._lock:
                seq = self._book.sent(goal.action)
            future = client.send_goal_async(message)
            future.add_done_callback(lambda f, a=goal.action, s=seq: self._on_response(a, s, f))

    def _on_response(self, action: str, seq: int, future: Any) -> None:
        handle = future.result()
        with self._lock:
            if handle is None or not handle.accepted:
                self._book.finished(action, seq)
                self._node.get_logger().error(f"{action} rejected the trajectory goal")
                return
            superseded = self._book.accepted(action, seq, handle)
        for old in superseded:
            old.cancel_goal_async()
        handle.get_result_async().add_done_callback(lambda _f: self._finished(action, seq))

    def _finished(self, action: str, seq: int) -> None:
        with self._lock:
            self._book.finished(action, seq)


def main(args: list[str] | None = None) -> int:
    return run(ChunkExecutorNode, args, num_threads=3)


if __name__ == "__main__":
    raise SystemExit(main())
