"""PolicyNode: runs the MoLe-VLA policy on the latest observation whenever the executor asks for a chunk.

camera topics (Image) + /joint_states ──► ObservationBuffer (execution/observation.py)
/mole/instruction (String) or /mole/execute_instruction (action) ──► the current task (a newer one pre-empts it)
mole/chunk_request ──► worker thread: policy.predict_action_chunk ──► mole/action_chunk + mole/router_state
/mole/task_success (Bool, the sim's detector) ──► the task ends successfully
mole/chunk_rejected (String JSON, from the executor) ──► the goal's feedback `last_rejection` (and its result reason)
mole/set_layer_budget (service) ──► the router budget, live from the next chunk

Inference runs in one worker thread, so subscriptions, the action server, cancel and the budget service stay
responsive while the model computes. Observations older than `max_observation_age` are never used.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Header, String

from mole_msgs.action import ExecuteInstruction
from mole_msgs.msg import ActionChunk, RouterState
from mole_msgs.srv import SetLayerBudget
from mole_vla_ros import conversions, qos
from mole_vla_ros.checkpoint_info import read_checkpoint_info
from mole_vla_ros.execution.chunk_queue import POLICY_CLAMP_MARGIN, clamp_near_limits
from mole_vla_ros.execution.observation import ObservationBuffer, StaleObservationError, validate_instruction
from mole_vla_ros.moveit_adapter import (
    MoveItNamedStateMover,
    named_state_error,
    named_state_trajectory,
    named_states,
)
from so100_driver import params as _params
from so100_driver.joints import joints_for
from so100_driver.node_runner import run


@dataclass(frozen=True)
class PolicyParams:
    checkpoint: str
    device: str
    chunk_size: int
    num_steps: int
    fps: float
    image_topics: tuple[str, ...]
    max_observation_age: float
    time_limit: float
    limit_clamp_margin: float = POLICY_CLAMP_MARGIN


@dataclass
class Task:
    """One instruction being executed. `outcome` is set once, when it ends."""

    instruction: str
    budget: float | None  # None: the node's live budget
    time_limit: float
    started: float = field(default_factory=time.monotonic)
    chunks: int = 0
    latencies: list[float] = field(default_factory=list)
    active_fraction: float = 0.0
    state: str = "waiting_for_observation"
    waiting_for: str = ""  # why the last observation was not usable, for the result when time runs out
    start_state: str = ""  # named state still to move to before the policy runs
    # The task's latest published chunk ids, in order (bounded: a rejection comes back within milliseconds).
    chunk_ids: deque[int] = field(default_factory=lambda: deque(maxlen=64))
    last_rejection: str = ""  # the executor's reason for the latest rejected chunk of this task
    last_rejected_id: int = -1
    outcome: tuple[bool, str] | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def rejecting(self) -> bool:
        """True while the executor refuses this task's chunks: the latest rejection is of its latest chunk (or the
        one before it, whose rejection can arrive after the next chunk went out)."""
        return self.last_rejected_id >= 0 and self.last_rejected_id in list(self.chunk_ids)[-2:]

    def finish(self, success: bool, reason: str) -> bool:
        if self.outcome is not None:
            return False
        self.outcome = (success, reason)
        self.state = "holding"
        self.done.set()
        return True


def load_policy(checkpoint: str, device: str, chunk_size: int, num_steps: int, logger: Any) -> Any:
    """The MoLe policy from a folder or hub id; an empty checkpoint builds the random tiny config (tests, demos)."""
    from mole_vla_ros.policy import MoLeConfig, MoLePolicy  # late: torch loads only in the policy process

    overrides = {k: v for k, v in (("chunk_size", chunk_size), ("num_steps", num_steps)) if v > 0}
    if checkpoint:
        policy = MoLePolicy.from_pretrained(checkpoint, **overrides)
    else:
        logger.warning(
            "NO CHECKPOINT GIVEN: running a RANDOMLY INITIALISED tiny MoLe policy. Its actions are meaningless; "
            "set the 'checkpoint' parameter to a trained folder or hub id before driving a real arm."
        )
        policy = MoLePolicy(MoLeConfig.preset("tiny", **overrides))
        policy.set_normalization(joint_range_stats())
    return policy.to(device).eval()


SMALL_MODEL_GFLOPS = 1.0  # per chunk; below it one intra-op thread is fastest on a CPU (see inference_threads)


def inference_threads(requested: int, device: str, gflops_per_chunk: float, default: int) -> int:
    """Torch intra-op threads for the policy process: `requested` when > 0; else (auto) 1 for a model under
    SMALL_MODEL_GFLOPS per chunk on a CPU, `default` (torch's own choice) otherwise.

    Why one: a small model's matrices are tens of values wide, so OpenMP's fork/join per op costs more than the
    split saves, and each parallel op waits for a thread on a core that the sim, the cameras or the executors hold.
    Measured with the shipped checkpoint beside one busy core (2-core machine): median 26 ms, p90 120-490 ms per
    chunk at 2 threads; 12 ms, p90 15 ms at 1. A SmolVLM2-500M backbone (hundreds of GFLOPs) keeps torch's default.
    """
    if requested > 0:
        return requested
    if device.startswith("cpu") and gflops_per_chunk < SMALL_MODEL_GFLOPS:
        return 1
    return default


def apply_fast_path(policy: Any, device: str, logger: Any) -> bool:
    """Put a loaded policy on the GPU fast path (policy/fast_path.py: bf16 weights, CUDA-graph expert layers).
    Only on CUDA: on a CPU the fast path has nothing to gain, so it warns and leaves the plain fp32 path."""
    if not device.startswith("cuda"):
        logger.warning(
            f"fast_path is true but device is {device!r}: the fast path is CUDA-only, running the plain path"
        )
        return False
    from mole_vla_ros.policy.fast_path import enable_fast_path  # late: torch loads only in the policy process

    plan = enable_fast_path(policy, device=device)
    logger.info(f"fast path on {plan.device}: {plan.weights}, compile={plan.compile} ({'; '.join(plan.reasons)})")
    return True


def joint_range_stats() -> dict[str, dict[str, list[float]]]:
    """Normalisation for an untrained policy: centred in each joint's range, +/-3 std spanning it, so its random
    actions land mostly inside the limits instead of around 0 +/- 1 rad."""
    from so100_driver.joints import SO100_JOINTS

    mean = [(j.lower + j.upper) / 2 for j in SO100_JOINTS]
    std = [(j.upper - j.lower) / 6 for j in SO100_JOINTS]
    return {key: {"mean": mean, "std": std} for key in ("observation.state", "action")}


class PolicyNode(Node):
    def __init__(self, policy: Any | None = None, **kwargs: Any) -> None:
        super().__init__("policy_node", **kwargs)
        self.declare_parameters(
            "",
            [
                ("checkpoint", "", _params.text("Checkpoint folder or hub id; empty = random tiny model.", True)),
                ("device", "cpu", _params.text("Torch device, e.g. cpu or cuda:0.", read_only=True)),
                (
                    "fast_path",
                    False,
                    _params.text("GPU fast path (bf16 weights, CUDA graphs) on a cuda device; CPU: plain path.", True),
                ),
                ("layer_budget", 0.5, _params.floating("Fraction of kept backbone layers to run.", 0.01, 1.0)),
                ("chunk_size", 0, _params.integer("Actions per chunk; 0 = the checkpoint's.", 0, 1000, True)),
                ("num_steps", 0, _params.integer("Denoising steps; 0 = the checkpoint's.", 0, 100, True)),
                ("fps", 30.0, _params.floating("Chunk step rate (action i at stamp + (i+1)/fps), Hz.", 1.0, 200.0)),
                (
                    "image_topics",
                    Parameter.Type.STRING_ARRAY,
                    _params.text(
                        "Camera topics in the policy's input order; unset = camera/<name>/image_raw for each camera "
                        "the checkpoint was trained on (its dataset.json), else camera/scene/image_raw.",
                        read_only=True,
                    ),
                ),
                ("max_observation_age", 0.5, _params.floating("Older inputs are not used, s.", 0.01, 60.0)),
                ("time_limit", 60.0, _params.floating("Default task time limit, s.", 0.1, 86400.0)),
                (
                    "limit_clamp_margin",
                    POLICY_CLAMP_MARGIN,
                    _params.floating(
                        "Predicted actions at most this far past a joint limit are clamped onto it (a policy "
                        "overshoots limits its demonstrations rest on); farther ones are published for the chunk "
                        "executor to reject as a broken model, rad.",
                        0.0,
                        math.pi,
                        read_only=True,
                    ),
                ),
                (
                    "start_state",
                    "",
                    _params.text(
                        "Named SRDF state (config/moveit/<arm>/: home, ready, ...) the arm moves to before each "
                        "instruction; empty = start wherever the arm is."
                    ),
                ),
                (
                    "start_state_tolerance",
                    0.05,
                    _params.floating(
                        "The start state is reached when each named joint is this close, rad.", 0.001, 0.5
                    ),
                ),
                (
                    "start_state_planner",
                    "direct",
                    _params.choice(
                        "direct: a joint-space move sent through the chunk executor; moveit: plan and execute with "
                        "moveit_py (full installs).",
                        ("direct", "moveit"),
                        read_only=True,
                    ),
                ),
                ("arm_model", "so100", _params.choice("Arm whose named states apply.", ("so100", "so101"), True)),
                (
                    "torch_threads",
                    0,
                    _params.integer(
                        "Torch intra-op threads of this process; 0 = auto: 1 for a model under 1 GFLOP per chunk on "
                        "a CPU (the shipped tiny one: parallel ops only wait on busy cores), else torch's default.",
                        0,
                        1024,
                        read_only=True,
                    ),
                ),
            ],
        )
        self.params = self._read_params()
        try:
            self.policy = policy or load_policy(
                self.params.checkpoint,
                self.params.device,
                self.params.chunk_size,
                self.params.num_steps,
                self.get_logger(),
            )
        except (ValueError, OSError) as err:  # CheckpointError is a ValueError; a missing file an OSError
            self.get_logger().fatal(f"cannot load the policy from checkpoint {self.params.checkpoint!r}: {err}")
            raise
        # Only a policy this node loaded: an injected one (tests) is used as it is.
        fast = policy is None and self.get_parameter("fast_path").value
        self.fast_path_active = fast and apply_fast_path(self.policy, self.params.device, self.get_logger())
        # Process-wide: only for a policy this node loaded (an injected one shares its process with a test).
        requested = int(self.get_parameter("torch_threads").value)
        self.torch_threads = self._set_torch_threads(requested) if policy is None else None
        self._budget = float(self.get_parameter("layer_budget").value)
        self._lock = threading.Lock()
        self._task: Task | None = None
        self._pending = False
        self._success_at = -math.inf
        self._chunk_id = 0
        self._logged: dict[str, float] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_stale_warning = -math.inf
        self.buffer = ObservationBuffer(self.params.image_topics)
        self._joint_state: tuple[np.ndarray, float] | None = None  # latest positions, monotonic receipt time
        self._arm = self.get_parameter("arm_model").value
        self._joints = joints_for(self._arm)  # read-only: the limits every chunk is clamped to
        self._start_state = self._checked_start_state(self.get_parameter("start_state").value)
        self._start_tolerance = float(self.get_parameter("start_state_tolerance").value)
        self._mover = None
        if self.get_parameter("start_state_planner").value == "moveit":
            self._mover = MoveItNamedStateMover()  # RuntimeError naming moveit_py where it is not installed
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._chunk_pub = self.create_publisher(ActionChunk, "mole/action_chunk", qos.RELIABLE)
        self._router_pub = self.create_publisher(RouterState, "mole/router_state", qos.RELIABLE)
        # The task being executed, whichever way it arrived (topic or action goal): the sim's success detector and
        # recorders follow this rather than /mole/instruction, which action goals never touch.
        self._active_pub = self.create_publisher(String, "mole/active_instruction", qos.LATEST_VALUE)
        # A group per input topic: each topic's messages in order, topics side by side. One group shared by the
        # cameras and the joint states made rclpy's multi-threaded executor spin a core re-offering the waiting
        # topic while another's callback ran (~6,000 wake-ups/s at 50 Hz inputs), which delayed every callback
        # in this process by up to 0.2 s: observations reached the policy stale.
        for topic in self.params.image_topics:
            self.create_subscription(
                Image,
                topic,
                lambda msg, t=topic: self._on_image(t, msg),
                qos.SENSOR_DATA,
                callback_group=MutuallyExclusiveCallbackGroup(),
            )
        self.create_subscription(
            JointState,
            "/joint_states",
            self._on_joint_state,
            qos.RELIABLE,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        # Volatile on purpose: matches both volatile and transient-local publishers (`ros2 topic pub` is the
        # latter), and a restarted policy node never replays an old instruction into a moving arm.
        self.create_subscription(String, "/mole/instruction", self._on_instruction, qos.RELIABLE)
        request_sub = self.create_subscription(Header, "mole/chunk_request", self._on_chunk_request, qos.RELIABLE)
        self._request_topic = request_sub.topic_name  # resolved: the node may run in a namespace
        self.create_subscription(Bool, "/mole/task_success", self._on_task_success, qos.RELIABLE)
        self.create_subscription(String, "mole/chunk_rejected", self._on_chunk_rejected, qos.RELIABLE)
        self.create_service(SetLayerBudget, "mole/set_layer_budget", self._on_set_budget)
        self._action_server = ActionServer(
            self,
            ExecuteInstruction,
            "/mole/execute_instruction",
            execute_callback=self._execute,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=lambda _handle: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup(),
        )
        self._worker = threading.Thread(target=self._work, name="policy_inference", daemon=True)
        self._worker.start()

    # ---- parameters ----

    def _set_torch_threads(self, requested: int) -> int:
        import torch  # late: torch loads only in the policy process

        from mole_vla_ros.policy.flops import chunk_flops

        gflops = chunk_flops(self.policy.config, 1.0)["total"] / 1e9
        threads = inference_threads(requested, self.params.device, gflops, torch.get_num_threads())
        torch.set_num_threads(threads)
        how = "as set" if requested > 0 else f"auto: {gflops:.3g} GFLOP per chunk at full depth"
        self.get_logger().info(f"torch intra-op threads: {threads} ({how})")
        return threads

    def _read_params(self) -> PolicyParams:
        checkpoint = self.get_parameter("checkpoint").value
        derived = Parameter("image_topics", value=read_checkpoint_info(checkpoint).image_topics)
        topics = tuple(self.get_parameter_or("image_topics", derived).value)
        if not topics or len(set(topics)) != len(topics):
            raise ValueError(f"image_topics must be distinct non-empty topic names, got {list(topics)}")
        return PolicyParams(
            checkpoint=checkpoint,
            device=self.get_parameter("device").value,
            chunk_size=self.get_parameter("chunk_size").value,
            num_steps=self.get_parameter("num_steps").value,
            fps=self.get_parameter("fps").value,
            image_topics=topics,
            max_observation_age=self.get_parameter("max_observation_age").value,
            time_limit=self.get_parameter("time_limit").value,
            limit_clamp_margin=self.get_parameter("limit_clamp_margin").value,
        )

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        updates = {}
        for p in parameters:
            if p.name == "layer_budget":
                if not (isinstance(p.value, float) and 0.0 < p.value <= 1.0):
                    return SetParametersResult(successful=False, reason=f"layer_budget {p.value} not in (0, 1]")
                self._budget = p.value
            elif p.name == "start_state":
                try:
                    self._start_state = self._checked_start_state(p.value)
                except ValueError as err:
                    return SetParametersResult(successful=False, reason=str(err))
            elif p.name == "start_state_tolerance":
                self._start_tolerance = float(p.value)
            elif p.name in ("fps", "max_observation_age", "time_limit"):
                if not (isinstance(p.value, float) and math.isfinite(p.value) and p.value > 0):
                    return SetParametersResult(successful=False, reason=f"{p.name} must be a positive float")
                updates[p.name] = p.value
        if updates:
            self.params = replace(self.params, **updates)
        return SetParametersResult(successful=True)

    def _checked_start_state(self, state: str) -> str:
        if state and state not in named_states(self._arm):
            raise ValueError(
                f"start_state {state!r} is not a named state of the {self._arm} SRDF: {named_states(self._arm)}"
            )
        return state

    # ---- inputs ----

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_image(self, topic: str, msg: Image) -> None:
        try:
            rgb = conversions.to_rgb(conversions.image_to_numpy(msg), msg.encoding)
        except ValueError as err:
            self._error_throttled(f"image on {topic} refused: {err}")
            return
        self.buffer.update_image(topic, rgb, conversions.stamp_to_seconds(msg.header.stamp))

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            positions = conversions.joint_state_to_positions(msg)
        except ValueError as err:
            self._error_throttled(f"joint state refused: {err}")
            return
        self.buffer.update_state(positions, conversions.stamp_to_seconds(msg.header.stamp))
        self._joint_state = (positions, time.monotonic())

    def _on_chunk_request(self, _msg: Header) -> None:
        self._pending = True
        self._wake.set()

    def _on_task_success(self, msg: Bool) -> None:
        if msg.data:
            self._success_at = time.monotonic()
            self._wake.set()

    def _on_chunk_rejected(self, msg: String) -> None:
        try:
            report = json.loads(msg.data)
            chunk_id, reason = int(report["chunk_id"]), str(report["reason"])
        except (ValueError, KeyError, TypeError) as err:
            self._error_throttled(f"chunk rejection report refused: {err}")
            return
        with self._lock:
            task = self._task
        if task is None or task.outcome is not None or chunk_id not in task.chunk_ids:
            return  # a chunk of an earlier task (or of this node before a restart)
        task.last_rejection = f"chunk {chunk_id}: {reason}"
        task.last_rejected_id = chunk_id

    def _on_instruction(self, msg: String) -> None:
        try:
            instruction = validate_instruction(msg.data)
        except ValueError as err:
            self.get_logger().error(f"instruction refused: {err}")
            return
        self.start_task(Task(instruction, None, self.params.time_limit))

    def _on_set_budget(self, request: SetLayerBudget.Request, response: SetLayerBudget.Response) -> Any:
        budget = float(request.budget)
        if math.isfinite(budget) and 0.0 < budget <= 1.0:
            self._budget = budget
            with self._lock:
                if self._task is not None:
                    self._task.budget = None  # a live change wins over the goal's own budget
            response.success, response.message = True, f"layer budget set to {budget:.3f}"
        else:
            response.success, response.message = False, f"budget {budget} must be finite and in (0, 1]"
        response.budget = self._budget
        response.active_layers = max(1, round(self._budget * self.policy.num_layers))
        return response

    def _error_throttled(self, text: str, period: float = 2.0) -> None:
        """Log `text` at most once per `period` s; a different problem is logged at once (rclpy's own throttle is
        per call site, and would hide a second, different fault behind the first)."""
        now = time.monotonic()
        if now - self._logged.get(text, -math.inf) >= period:
            if len(self._logged) > 256:
                self._logged.clear()
            self._logged[text] = now
            self.get_logger().error(text)

    # ---- tasks ----

    def start_task(self, task: Task) -> Task:
        """Make `task` current; the previous one ends as pre-empted. With `start_state` set, the task first moves
        the arm there (state "moving_to_start")."""
        if self._start_state:
            task.start_state, task.state = self._start_state, "moving_to_start"
        with self._lock:
            previous, self._task = self._task, task
            self._pending = True
        if previous is not None and previous.finish(False, "pre-empted by a new instruction"):
            self.get_logger().info(f"pre-empted {previous.instruction!r}")
        self.get_logger().info(f"task started: {task.instruction!r}")
        self._active_pub.publish(String(data=task.instruction))
        if hasattr(self.policy, "reset"):
            self.policy.reset()
        self._wake.set()
        return task

    def _execute(self, goal_handle: ServerGoalHandle) -> ExecuteInstruction.Result:
        goal = goal_handle.request
        try:
            instruction = validate_instruction(goal.instruction)
            if not (math.isfinite(goal.layer_budget) and 0.0 <= goal.layer_budget <= 1.0):
                raise ValueError(f"layer_budget {goal.layer_budget} must be 0 (node default) or in (0, 1]")
            if not (math.isfinite(goal.time_limit) and goal.time_limit >= 0.0):
                raise ValueError(f"time_limit {goal.time_limit} must be 0 (node default) or positive")
        except ValueError as err:
            # Accept-then-abort rather than reject: a rejected goal carries no reason back to the client.
            self.get_logger().error(f"goal refused: {err}")
            goal_handle.abort()
            return ExecuteInstruction.Result(success=False, reason=f"invalid goal: {err}")
        task = self.start_task(Task(instruction, goal.layer_budget or None, goal.time_limit or self.params.time_limit))
        sent = (-1, "", "")
        while not task.done.wait(0.05):
            if goal_handle.is_cancel_requested:
                task.finish(False, "cancelled")
                break
            if not goal_handle.is_active:  # pre-empted at the action-server level
                task.finish(False, "pre-empted by a new instruction")
                break
            progress = (task.chunks, task.state, task.last_rejection)
            # Read after the progress: finish() sets the outcome before its final state, so a progress read from an
            # ended task is never sent. Feedback tells a running goal; the result alone tells how it ended.
            if task.outcome is None and progress != sent:
                sent = progress
                goal_handle.publish_feedback(self._feedback(task, *progress))
        success, reason = task.outcome
        result = ExecuteInstruction.Result(success=success, reason=reason, chunks=task.chunks)
        result.mean_latency = float(np.mean(task.latencies)) if task.latencies else 0.0
        if reason == "cancelled" and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    @staticmethod
    def _feedback(task: Task, chunks: int, state: str, last_rejection: str) -> ExecuteInstruction.Feedback:
        return ExecuteInstruction.Feedback(
            chunks=chunks,
            active_layer_fraction=task.active_fraction,
            last_latency=task.latencies[-1] if task.latencies else 0.0,
            state=state,
            last_rejection=last_rejection,
        )

    # ---- inference (worker thread) ----

    def _work(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.05)
            self._wake.clear()
            with self._lock:
                task = self._task
            if task is None or task.outcome is not None:
                continue
            if task.start_state:
                self._move_to_start(task)
                continue
            if self._success_at > task.started:
                task.finish(True, "succeeded")
            elif time.monotonic() - task.started > task.time_limit:
                waiting = task.state == "waiting_for_observation" and task.waiting_for
                reason = f"time limit, no usable observation: {task.waiting_for}" if waiting else "time limit"
                if task.rejecting():
                    reason += f"; last chunk rejected: {task.last_rejection.split(': ', 1)[1]}"
                task.finish(False, reason)
            elif self._pending:
                self._infer(task)

    def _move_to_start(self, task: Task) -> None:
        """Move the arm to the task's start state and wait (bounded) until /joint_states shows it there. The move
        goes through the chunk executor as one chunk, so it takes the same path as the policy's actions (limits,
        speed caps, collision check, any output mode) and never fights the executor's stream. The time limit
        counts from the start pose."""
        state, task.start_state = task.start_state, ""
        try:
            if self._mover is not None:
                self._mover.move_to(state)
                timeout = 30.0
            else:
                current = self._fresh_joint_state(task, timeout=10.0)
                if current is None:
                    return
                times, positions = named_state_trajectory(self._arm, state, current, fps=self.params.fps)
                self._publish_move(task, positions, state)
                timeout = 2.0 * float(times[-1]) + 3.0  # the executor's speed caps and a loaded machine's delays
            if not self._wait_at_state(task, state, timeout):
                return
        except (ValueError, RuntimeError) as err:
            self.get_logger().error(f"cannot move to start state {state!r}: {err}")
            task.finish(False, f"cannot move to start state {state!r}: {err}")
            return
        self.get_logger().info(f"at start state {state!r}: starting {task.instruction!r}")
        task.started = time.monotonic()
        task.state = "waiting_for_observation"
        self._pending = True
        self._wake.set()

    def _fresh_joint_state(self, task: Task, timeout: float) -> np.ndarray | None:
        """The arm's current position, once a chunk executor listens (a move published to nobody is lost)."""
        deadline = time.monotonic() + timeout
        while task.outcome is None and not self._stop.is_set():
            latest = self._joint_state
            fresh = latest is not None and time.monotonic() - latest[1] <= self.params.max_observation_age
            if fresh and self._executor_listening():
                return latest[0]
            if time.monotonic() > deadline:
                missing = "a joint state on /joint_states" if not fresh else "a chunk executor on mole/action_chunk"
                task.finish(False, f"start state: no {missing} for {timeout:.0f} s")
                return None
            time.sleep(0.02)
        return None

    def _executor_listening(self) -> bool:
        """A chunk executor's subscription is matched to our chunk publisher. The executor is the node that
        publishes chunk requests; our publisher's match count alone also counts recorders and monitors, and seeing
        the executor's request publisher does not mean its chunk subscription has been matched yet (discovery is
        per endpoint): a move published in between is lost (VOLATILE), and the arm never moves."""
        executors = {(i.node_name, i.node_namespace) for i in self.get_publishers_info_by_topic(self._request_topic)}
        subscribers = self.get_subscriptions_info_by_topic(self._chunk_pub.topic_name)
        if not any((i.node_name, i.node_namespace) in executors for i in subscribers):
            return False
        return self._chunk_pub.get_subscription_count() >= len(subscribers)

    def _wait_at_state(self, task: Task, state: str, timeout: float) -> bool:
        started = time.monotonic()
        error, joint = math.inf, ""
        while task.outcome is None and not self._stop.is_set():
            latest = self._joint_state
            if latest is not None and latest[1] > started:
                error, joint = named_state_error(self._arm, state, latest[0])
                if error <= self._start_tolerance:
                    return True
            if task.rejecting():  # the executor refused the move (collision, limits): the arm holds, no point waiting
                reason = f"start state {state!r}: move rejected: {task.last_rejection.split(': ', 1)[1]}"
                self.get_logger().error(reason)
                task.finish(False, reason)
                return False
            if time.monotonic() - started > timeout:
                where = f"{joint} still {error:.3f} rad away" if joint else "no joint state"
                self.get_logger().error(f"start state {state!r} not reached in {timeout:.1f} s: {where}")
                task.finish(False, f"start state {state!r} not reached in {timeout:.1f} s: {where}")
                return False
            time.sleep(0.02)
        return False

    def _publish_move(self, task: Task, positions: np.ndarray, state: str) -> None:
        chunk = conversions.build_action_chunk(
            positions,
            conversions.seconds_to_stamp(self._now()),
            fps=self.params.fps,
            chunk_id=self._chunk_id,
            instruction=task.instruction,
        )
        task.chunk_ids.append(self._chunk_id)  # a rejected move (collision, limits) reaches the goal's feedback
        self._chunk_pub.publish(chunk)
        self._chunk_id += 1
        self.get_logger().info(f"moving to start state {state!r} ({len(positions)} steps) for {task.instruction!r}")

    def _infer(self, task: Task) -> None:
        now = self._now()
        try:
            obs = self.buffer.snapshot(now, self.params.max_observation_age)
        except StaleObservationError as err:
            task.state = "waiting_for_observation"
            task.waiting_for = str(err)
            if time.monotonic() - self._last_stale_warning > 2.0:
                self._last_stale_warning = time.monotonic()
                self.get_logger().warning(f"observation not used: {err}")
            self._wake.set()  # try again on the next pass
            time.sleep(0.02)
            return
        self._pending = False
        task.state = "inferring"
        budget = task.budget or self._budget
        try:
            pred = self.policy.predict_action_chunk(self._batch(obs, task.instruction), budget=budget)
            actions = pred.actions[0].detach().cpu().double().numpy()  # (H, J)
        except RuntimeError as err:
            # MoLePolicy raises on its own NaN guard; anything else is a genuine failure of the model.
            reason = "non-finite (NaN/inf) actions" if "non-finite" in str(err) else f"policy failed: {err}"
            self._fail(task, reason)
            return
        if not np.all(np.isfinite(actions)):
            self._fail(task, "policy produced non-finite (NaN/inf) actions")
            return
        if actions.shape[-1] == len(self._joints):  # a wrong width is the executor's to reject, by name
            actions, overshoot = clamp_near_limits(actions, self._joints, self.params.limit_clamp_margin)
            if 0.0 < overshoot <= self.params.limit_clamp_margin:  # farther ones are the executor's to report
                self.get_logger().info(
                    f"clamped a chunk onto the joint limits (overshoot up to {overshoot:.3f} rad)",
                    throttle_duration_sec=10.0,
                )
        with self._lock:
            if self._task is not task or task.outcome is not None:
                return  # pre-empted while inferring: this chunk belongs to nobody
        latency = self._now() - obs.stamp
        self._publish(task, obs.stamp, actions, pred, budget, latency)

    def _fail(self, task: Task, reason: str) -> None:
        if reason.startswith("non-finite"):
            reason = f"policy produced {reason}"
        self.get_logger().error(f"{reason} for {task.instruction!r}: chunk not published, task aborted")
        task.finish(False, reason)

    def _batch(self, obs: Any, instruction: str) -> dict[str, Any]:
        import torch

        device = self.params.device
        return {
            "images": [conversions.rgb_to_tensor(img).to(device) for img in obs.images],
            "instruction": [instruction],
            "state": torch.as_tensor(obs.state, dtype=torch.float32, device=device)[None],
        }

    def _publish(self, task: Task, stamp: float, actions: np.ndarray, pred: Any, budget: float, latency: float) -> None:
        mask = pred.active_mask[0].detach().cpu().numpy().astype(bool)
        active = np.flatnonzero(mask).tolist()
        ros_stamp = conversions.seconds_to_stamp(stamp)
        chunk = conversions.build_action_chunk(
            actions,
            ros_stamp,
            fps=self.params.fps,
            chunk_id=self._chunk_id,
            instruction=task.instruction,
            inference_latency=latency,
            active_layers=active,
            num_layers=len(mask),
        )
        router = RouterState(
            chunk_id=self._chunk_id,
            active_mask=mask.tolist(),
            scores=pred.scores[0].detach().cpu().float().numpy().tolist(),
            budget=float(budget),
            num_active=len(active),
            flops_fraction=float(pred.flops_fraction),
        )
        router.header.stamp = ros_stamp
        task.chunk_ids.append(self._chunk_id)  # before publishing: a rejection can come back at once
        self._chunk_pub.publish(chunk)
        self._router_pub.publish(router)
        self._chunk_id += 1
        task.chunks += 1
        task.latencies.append(latency)
        task.active_fraction = len(active) / max(1, len(mask))
        task.state = "executing"

    def stop(self) -> None:
        """End the current task and the worker thread (idempotent). Call while the executor still spins, so a
        running goal can send its result."""
        self._stop.set()
        self._wake.set()
        self._worker.join(timeout=10.0)
        with self._lock:
            if self._task is not None:
                self._task.finish(False, "policy node shutting down")

    def destroy_node(self) -> None:
        if hasattr(self, "_worker"):  # a start-up that failed (bad checkpoint) has no worker or server to stop
            self.stop()
            self._action_server.destroy()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run(PolicyNode, args, num_threads=4)


if __name__ == "__main__":
    raise SystemExit(main())
