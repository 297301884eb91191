"""RecorderNode: camera image(s) + joint_states + the commanded action -> LeRobot v3.0 episodes, crash-safe.

Streams are aligned at `fps` by `data/align.py` (the code `mole-vla bag2lerobot` uses too): each frame takes the
latest sample of every stream no older than `max_age`; a frame missing one is dropped and counted, never filled in.
The commanded action is the leader arm in teleop (`leader/joint_states`) or the executor's `joint_command` when a
policy runs (`action_topic`). Episodes go through `LeRobotDatasetWriter(commit_each_episode=True)`: each saved
episode is on disk and loadable at once, and a kill mid-episode loses only that episode.

Resume: a `root` that already holds a dataset with the same features (fps, cameras and image sizes, joint names,
codec) gets the new episodes appended after its own; a dataset that differs is refused at start-up (fps, cameras,
joints, codec) or at the first `recorder/start` (image sizes, known from the first images), naming each mismatch.

Faults: SIGINT or SIGTERM (launch shutdown) mid-episode saves the running episode, or drops it with
`on_shutdown: discard`; it is never left half-written. An input stream silent for `stall_timeout` seconds while
recording stops the episode and saves what was recorded (a log line and the status's `last_stop` name the stream).

Services (std_srvs/Trigger): `recorder/start`, `recorder/stop` (saves the episode), `recorder/discard` (drops the
running episode; re-record = discard + start). Task text: the `task` parameter, or the latest `recorder/task`
(std_msgs/String, latched). Status: `recorder/status` (std_msgs/String, JSON: state, episode, duration, frames,
fps achieved, dropped and per-stream counts) at `status_rate` Hz.

`python -m mole_vla_ros.nodes.recorder_node --ros-args --params-file config/recorder.yaml -p root:=~/datasets/pick`
"""

from __future__ import annotations

import json
import math
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from mole_vla_ros import qos
from mole_vla_ros.data.align import Frame, FrameAligner
from mole_vla_ros.data.lerobot_dataset import DatasetError, LeRobotDatasetWriter, append_mismatches
from mole_vla_ros.decode import image_rgb, joint_positions, stamp_seconds
from so100_driver import params as _params
from so100_driver.joints import JOINT_NAMES
from so100_driver.node_runner import run

STATE, ACTION = "state", "action"
VCODECS = ("libx264", "libsvtav1")
SHUTDOWN = ("save", "discard")


@dataclass(frozen=True)
class RecorderParams:
    root: str
    camera_topics: tuple[str, ...]
    camera_names: tuple[str, ...]
    joint_states_topic: str
    action_topic: str
    fps: int
    max_age: float
    tolerance: float
    latency: float
    task: str
    robot_type: str
    vcodec: str
    status_rate: float
    on_shutdown: str
    stall_timeout: float


class RecorderNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("recorder", **kwargs)
        self.declare_parameters(
            "",
            [
                (
                    "root",
                    "",
                    _params.text(
                        "Dataset folder (required): new, or a dataset of the same features to append to.", True
                    ),
                ),
                (
                    "camera_topics",
                    ["camera/scene/image_raw"],
                    _params.text("Image topics, one per camera.", read_only=True),
                ),
                ("camera_names", ["scene"], _params.text("Dataset camera names, one per topic.", read_only=True)),
                ("joint_states_topic", "joint_states", _params.text("Observed joint state.", read_only=True)),
                (
                    "action_topic",
                    "leader/joint_states",
                    _params.text("Commanded action: leader/joint_states (teleop) or joint_command.", read_only=True),
                ),
                ("fps", 30, _params.integer("Frame rate of the dataset, Hz.", 1, 200, read_only=True)),
                ("max_age", 0.1, _params.floating("Oldest sample a frame may take, s.", 0.001, 5.0, read_only=True)),
                (
                    "tolerance",
                    0.005,
                    _params.floating("Stamp jitter accepted after a frame's time, s (< 1/fps).", 0.0, 0.5, True),
                ),
                (
                    "latency",
                    0.1,
                    _params.floating("How long a frame waits for samples in flight, s.", 0.0, 5.0, read_only=True),
                ),
                ("task", "", _params.text("Task text of the episodes (or publish on recorder/task).")),
                ("robot_type", "so100", _params.text("info.json robot_type.", read_only=True)),
                ("vcodec", "libx264", _params.choice("Video encoder.", VCODECS, read_only=True)),
                ("status_rate", 2.0, _params.floating("recorder/status rate, Hz.", 0.1, 50.0, read_only=True)),
                (
                    "on_shutdown",
                    "save",
                    _params.choice("Episode running at SIGINT/SIGTERM: save or discard it.", SHUTDOWN, read_only=True),
                ),
                (
                    "stall_timeout",
                    2.0,
                    _params.floating("A stream silent this long stops and saves the episode, s.", 0.1, 600.0, True),
                ),
            ],
        )
        self.params = self._read_params()
        p = self.params
        self._check_existing_dataset()
        self._lock = threading.Lock()
        self._aligner = FrameAligner(
            (*p.camera_names, STATE, ACTION), p.camera_names[0], p.fps, p.max_age, p.tolerance, history=1.0
        )
        self._topic_task = ""
        self._episode_task = ""
        self._invalid: dict[str, int] = dict.fromkeys(self._aligner.streams, 0)
        self._writer: LeRobotDatasetWriter | None = None
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._rejected = 0
        self._last_stats: dict[str, Any] = {}
        self._last_stop = ""  # how the last episode ended (saved, discarded, stopped on a stall or at shutdown)
        self._saving = False  # an ended episode is being saved (the status says "saving", not yet "idle")
        self._arrivals: dict[str, float] = {}  # per stream: when its latest message arrived (node clock, s)
        self._episode_start = 0.0
        # Frames go to the writer on a thread of their own, and from there to an encoder process: a slow encoder
        # delays the files, never the subscriptions.
        self._writer_thread = threading.Thread(target=self._write_loop, name="recorder-writer", daemon=True)
        self._writer_thread.start()

        for topic, name in zip(p.camera_topics, p.camera_names, strict=True):
            self.create_subscription(Image, topic, self._subscriber(name, image_rgb), qos.RECORD_IMAGES)
        # Joint streams are reliable (what arm_node and leader_node offer): a lost command is a hole in the action.
        positions = lambda msg: joint_positions(msg, JOINT_NAMES)  # noqa: E731
        self.create_subscription(
            JointState, p.joint_states_topic, self._subscriber(STATE, positions), qos.RECORD_STREAM
        )
        self.create_subscription(JointState, p.action_topic, self._subscriber(ACTION, positions), qos.RECORD_STREAM)
        self.create_subscription(String, "recorder/task", self._on_task, qos.LATEST_VALUE)
        self._status_pub = self.create_publisher(String, "recorder/status", qos.RELIABLE)
        services = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "recorder/start", self._on_start, callback_group=services)
        self.create_service(Trigger, "recorder/stop", self._on_stop, callback_group=services)
        self.create_service(Trigger, "recorder/discard", self._on_discard, callback_group=services)
        self.create_timer(1.0 / p.fps, self._on_tick)
        # With the services: a stall's stop never runs alongside a start or stop request.
        self.create_timer(min(0.25, p.stall_timeout / 4), self._check_stalls, callback_group=services)
        self.create_timer(1.0 / p.status_rate, self._publish_status)
        self.get_logger().info(
            f"recorder: {list(p.camera_topics)} + {p.joint_states_topic} + action {p.action_topic} at {p.fps} Hz "
            f"-> {p.root}"
        )

    def _read_params(self) -> RecorderParams:
        values = {name: self.get_parameter(name).value for name in RecorderParams.__dataclass_fields__}
        values["camera_topics"] = tuple(values["camera_topics"])
        values["camera_names"] = tuple(values["camera_names"])
        if not values["root"]:
            raise ValueError("parameter root (the dataset folder) is required")
        values["root"] = str(Path(values["root"]).expanduser())
        if not values["camera_topics"] or len(values["camera_topics"]) != len(values["camera_names"]):
            raise ValueError("camera_topics and camera_names need one entry each per camera (at least one)")
        if values["on_shutdown"] not in SHUTDOWN:
            raise ValueError(f"on_shutdown {values['on_shutdown']!r} must be one of {list(SHUTDOWN)}")
        if values["vcodec"] not in VCODECS:
            raise ValueError(f"vcodec {values['vcodec']!r} must be one of {list(VCODECS)}")
        if values["tolerance"] >= 1.0 / values["fps"]:
            raise ValueError(f"tolerance {values['tolerance']} s must be below a frame period (1/{values['fps']})")
        return RecorderParams(**values)

    def _check_existing_dataset(self) -> None:
        """Refuse at start-up a dataset at root that cannot be appended to (all but image sizes are known now)."""
        info_path = Path(self.params.root) / "meta" / "info.json"
        if not info_path.exists():
            return
        info = json.loads(info_path.read_text())
        # Image sizes are checked against the first images, at the first start.
        cameras = dict.fromkeys(self.params.camera_names)
        mismatches = append_mismatches(info, self.params.fps, cameras, JOINT_NAMES, self.params.vcodec)
        if mismatches:
            raise DatasetError(f"{self.params.root} holds a dataset with other features: " + "; ".join(mismatches))
        self.get_logger().info(
            f"{self.params.root} holds {info.get('total_episodes', 0)} episodes: new episodes are appended"
        )

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ---- inputs -------------------------------------------------------------------------------------------

    def _subscriber(self, stream: str, decode: Callable[[Any], Any]) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            # Unstamped messages are stamped on arrival (the bag converter uses the log time for them).
            stamp = stamp_seconds(msg.header) or self._now()
            try:
                value = decode(msg)
            except ValueError as exc:
                self._invalid[stream] += 1
                self.get_logger().warning(f"{stream}: message ignored: {exc}", throttle_duration_sec=2.0)
                return
            with self._lock:
                self._arrivals[stream] = self._now()
                self._aligner.add(stream, stamp, value)

        return callback

    def _on_task(self, msg: String) -> None:
        self._topic_task = msg.data

    def _on_tick(self) -> None:
        with self._lock:
            frames = self._aligner.poll(self._now() - self.params.latency)
        for frame in frames:
            self._queue.put(("frame", (frame, self._episode_task)))

    # ---- services -----------------------------------------------------------------------------------------

    def _on_start(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        task = self.get_parameter("task").value or self._topic_task
        with self._lock:
            if self._aligner.running:
                return _answer(response, False, "already recording; stop or discard first")
            if not task:
                return _answer(response, False, "no task text: set the task parameter or publish on recorder/task")
            if self._writer is None:
                try:
                    self._writer = self._open_writer()
                except (DatasetError, ValueError) as exc:
                    return _answer(response, False, str(exc))
            self._episode_task = task
            self._episode_start = self._now()
            self._aligner.begin(self._episode_start)
        episode = self._call_writer("episodes") or 0
        self.get_logger().info(f"recording episode {episode}: '{task}'")
        return _answer(response, True, f"recording episode {episode}: {task}")

    def _on_stop(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        return _answer(response, *self._stop_episode())

    def _stop_episode(self, why: str = "") -> tuple[bool, str]:
        """End the running episode and save it (after every frame queued before); (success, message)."""
        with self._lock:
            if not self._aligner.running:
                return False, "not recording"
            frames = self._aligner.end(self._now())
            stats = self._last_stats = self._aligner.stats.as_dict()  # the status shows this episode from now on
            self._saving = True
        for frame in frames:
            self._queue.put(("frame", (frame, self._episode_task)))
        result = self._call_writer("save")
        prefix = f"{why}: " if why else ""
        if isinstance(result, Exception):
            message = f"{prefix}episode not saved: {result} (dropped {stats['dropped']} frames)"
        else:
            message = (
                f"{prefix}saved episode {result}: {stats['frames']} frames, {stats['dropped']} dropped "
                f"({self._achieved_fps(stats):.1f} fps of {self.params.fps})"
            )
            self.get_logger().info(message)
        with self._lock:
            self._last_stop, self._saving = message, False
        return not isinstance(result, Exception), message

    def _silent_streams(self) -> list[str]:
        """Streams without a message for stall_timeout while recording (counted from the episode start)."""
        now = self._now()
        return [
            stream
            for stream in self._aligner.streams
            if now - max(self._arrivals.get(stream, -math.inf), self._episode_start) > self.params.stall_timeout
        ]

    def _check_stalls(self) -> None:
        with self._lock:
            silent = self._silent_streams() if self._aligner.running else []
        if silent:
            names = ", ".join(silent)
            self.get_logger().warning(f"{names} silent for over {self.params.stall_timeout:g} s: stopping the episode")
            ok, message = self._stop_episode(f"stopped: {names} silent for over {self.params.stall_timeout:g} s")
            if not ok:
                self.get_logger().error(message)

    def _on_discard(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            if not self._aligner.running:
                return _answer(response, False, "not recording (saved episodes are final)")
            self._aligner.end(self._now())
            self._last_stats = self._aligner.stats.as_dict()
        self._call_writer("discard")
        self._last_stop = "episode discarded"
        self.get_logger().info("episode discarded")
        return _answer(response, True, "episode discarded")

    def _open_writer(self) -> LeRobotDatasetWriter:
        sizes = {}
        for topic, name in zip(self.params.camera_topics, self.params.camera_names, strict=True):
            latest = self._aligner.latest(name)
            if latest is None:
                raise ValueError(f"no image yet on {topic}: the camera size is taken from its images")
            sizes[name] = tuple(latest[1].shape[:2])
        return LeRobotDatasetWriter(
            self.params.root,
            fps=self.params.fps,
            cameras=sizes,
            robot_type=self.params.robot_type,
            vcodec=self.params.vcodec,
            commit_each_episode=True,
            append=True,
            encoder_process=True,  # the encoder's CPU and GIL stay out of this process and its callbacks
        )

    # ---- the writer thread --------------------------------------------------------------------------------

    def _call_writer(self, command: str, timeout: float = 60.0) -> Any:
        """Run a command on the writer thread after every frame queued before it; returns its result."""
        done: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._queue.put((command, done))
        try:
            return done.get(timeout=timeout)
        except queue.Empty:
            return TimeoutError(f"the writer did not answer within {timeout:.0f} s")

    def _write_loop(self) -> None:
        while True:
            command, arg = self._queue.get()
            if command == "frame":
                self._write_frame(*arg)
                continue
            result: Any = None
            try:
                if command == "save":
                    result = self._writer.save_episode() if self._writer is not None else DatasetError("no writer")
                elif command == "discard" and self._writer is not None:
                    self._writer.discard_episode()
                elif command == "episodes":
                    result = self._writer.num_episodes if self._writer is not None else 0
                elif command == "close" and self._writer is not None:
                    self._writer.close()
            except DatasetError as exc:
                result = exc
            arg.put(result)
            if command == "close":
                return

    def _write_frame(self, frame: Frame, task: str) -> None:
        if self._writer is None:
            return
        images = {name: frame.values[name] for name in self.params.camera_names}
        try:
            self._writer.add_frame(frame.values[STATE], frame.values[ACTION], images, task)
        except DatasetError as exc:  # e.g. a camera that changed resolution mid-recording
            self._rejected += 1
            self.get_logger().error(f"frame not written: {exc}", throttle_duration_sec=2.0)

    # ---- status -------------------------------------------------------------------------------------------

    def _achieved_fps(self, stats: dict[str, Any]) -> float:
        decided = stats["frames"] + stats["dropped"]
        return self.params.fps * stats["frames"] / decided if decided else 0.0

    def _publish_status(self) -> None:
        with self._lock:
            running = self._aligner.running
            stats = self._aligner.stats.as_dict() if running else self._last_stats
            t0 = self._aligner.t0 if running else None
            silent = self._silent_streams() if running else []
            saving = self._saving
        writer = self._writer
        decided = stats.get("frames", 0) + stats.get("dropped", 0)
        status = {
            "state": "recording" if running else "saving" if saving else "idle",
            "episode": writer.num_episodes if writer is not None else 0,
            "episodes_saved": writer.num_episodes if writer is not None else 0,
            "task": self._episode_task if running else (self.get_parameter("task").value or self._topic_task),
            "t0": t0,
            "duration": decided / self.params.fps,
            "fps_achieved": self._achieved_fps(stats) if stats else 0.0,
            "backlog": self._queue.qsize(),
            "written": writer.pending_frames if writer is not None and running else 0,
            "invalid": dict(self._invalid),
            "rejected": self._rejected,
            "silent": silent,
            "last_stop": self._last_stop,
            **stats,
        }
        self._status_pub.publish(String(data=json.dumps(status)))

    def stop(self) -> None:
        """SIGINT/SIGTERM: the running episode is saved or dropped (`on_shutdown`), then the writer closes."""
        with self._lock:
            running = self._aligner.running
        if running and self.params.on_shutdown == "save":
            ok, message = self._stop_episode("shutdown while recording")
            if not ok:
                self.get_logger().error(message)
        elif running:
            with self._lock:
                self._aligner.end()
            self.get_logger().warning("shutdown while recording: the running episode is discarded (on_shutdown)")
            self._call_writer("discard")
        if self._writer is not None and self._writer_thread.is_alive():
            result = self._call_writer("close")
            if isinstance(result, Exception):
                self.get_logger().info(f"dataset not written: {result}")


def _answer(response: Trigger.Response, success: bool, message: str) -> Trigger.Response:
    response.success = success
    response.message = message
    return response


def main(args: list[str] | None = None) -> int:
    # launch stops nodes with SIGINT, then SIGTERM: node_runner ends the spin on both, so stop() closes the episode.
    # One thread: rclpy's MultiThreadedExecutor delayed callbacks by over a second at ~100 messages/s on 2 loaded
    # cores (ros2/rclpy#1223), so samples arrived after their frame was written; the writer has its own thread.
    return run(RecorderNode, args, executor=lambda _nodes: SingleThreadedExecutor(), fatal=(ValueError,))


if __name__ == "__main__":
    raise SystemExit(main())
