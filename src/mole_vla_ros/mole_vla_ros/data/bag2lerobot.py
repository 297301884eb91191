"""`mole-vla bag2lerobot`: rosbag2 recordings (MCAP or sqlite3) -> a LeRobot v3.0 dataset, one episode per bag.

Read with the `rosbags` library (no ROS install needed) and aligned by `align.py`, the code the live recorder
runs: messages are fed in log-time order and frames decided `latency` after their time, as the recorder decides
them on arrival, so a bag of the messages the recorder received gives the recorder's dataset.

Topics, fps and the task come from arguments or a YAML file with the same keys (arguments win):

    cameras: {scene: /camera/scene/image_raw}      # dataset camera name: image topic
    joint_states: /joint_states
    action: /leader/joint_states             # or /joint_command when a policy ran
    fps: 30
    task: pick up the red cube
    max_age: 0.1                             # s
    tolerance: 0.005                         # s
    latency: 0.1                             # s

Every bag is checked first (the topics exist, with messages of the right type); on any error nothing is written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from mole_vla_ros.data.align import FrameAligner
from mole_vla_ros.data.lerobot_dataset import DatasetError, LeRobotDatasetWriter
from mole_vla_ros.decode import image_rgb, joint_positions, stamp_seconds
from so100_driver.joints import JOINT_NAMES

STATE, ACTION = "state", "action"
IMAGE_TYPE, JOINT_STATE_TYPE = "sensor_msgs/msg/Image", "sensor_msgs/msg/JointState"


class BagError(ValueError):
    """A bag that cannot be converted as asked; the message names the bag and what is wrong."""


@dataclass(frozen=True)
class BagSpec:
    """What to read from the bags and how to align it (defaults: config/recorder.yaml's)."""

    cameras: dict[str, str] = field(default_factory=lambda: {"scene": "/camera/scene/image_raw"})
    joint_states: str = "/joint_states"
    action: str = "/leader/joint_states"
    fps: int = 30
    task: str = ""
    max_age: float = 0.1
    tolerance: float = 0.005
    latency: float = 0.1
    robot_type: str = "so100"
    vcodec: str = "libx264"

    def topics(self) -> dict[str, tuple[str, str]]:
        """Stream name -> (topic, message type)."""
        out = {name: (topic, IMAGE_TYPE) for name, topic in self.cameras.items()}
        return out | {STATE: (self.joint_states, JOINT_STATE_TYPE), ACTION: (self.action, JOINT_STATE_TYPE)}


def _reader(bag: Path) -> Any:
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    # Bags written by ROS 2 carry their message definitions; the Kilted store covers those that do not.
    return AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_KILTED))


def check_bag(bag: Path, spec: BagSpec) -> dict[str, int]:
    """Raise BagError unless every topic of `spec` is in the bag with messages of its type; returns counts."""
    if not bag.exists():
        raise BagError(f"{bag}: no such bag")
    try:
        with _reader(bag) as reader:
            connections = list(reader.connections)
    except Exception as exc:  # rosbags raises its own error types for unreadable bags
        raise BagError(f"{bag}: cannot read the bag ({type(exc).__name__}: {exc})") from exc
    present = {c.topic: c.msgtype for c in connections}
    counts: dict[str, int] = {}
    for c in connections:
        counts[c.topic] = counts.get(c.topic, 0) + int(c.msgcount)
    problems = []
    for stream, (topic, msgtype) in spec.topics().items():
        if topic not in present:
            problems.append(f"topic {topic} ({stream}) is not in the bag")
        elif present[topic] != msgtype:
            problems.append(f"topic {topic} ({stream}) holds {present[topic]}, expected {msgtype}")
        elif counts[topic] == 0:
            problems.append(f"topic {topic} ({stream}) has no messages")
    if problems:
        have = ", ".join(f"{t} [{present[t]}, {counts[t]} msgs]" for t in sorted(present)) or "nothing"
        raise BagError(f"{bag}: " + "; ".join(problems) + f". The bag has: {have}")
    return {stream: counts[topic] for stream, (topic, _t) in spec.topics().items()}


def read_samples(bag: Path, spec: BagSpec) -> Iterator[tuple[str, float, float, Any]]:
    """(stream, stamp s, log time s, value) in log-time order; undecodable messages are skipped and counted."""
    streams = {topic: stream for stream, (topic, _t) in spec.topics().items()}
    decode = {STATE: lambda m: joint_positions(m, JOINT_NAMES), ACTION: lambda m: joint_positions(m, JOINT_NAMES)}
    with _reader(bag) as reader:
        wanted = [c for c in reader.connections if c.topic in streams]
        for connection, log_ns, raw in reader.messages(connections=wanted):
            stream = streams[connection.topic]
            msg = _deserialize(reader, raw, connection.msgtype)
            log_time = log_ns * 1e-9
            try:
                value = decode.get(stream, image_rgb)(msg)
            except ValueError:
                yield stream, math.nan, log_time, None
                continue
            # Unstamped messages take the log time, as the live recorder stamps them on arrival.
            yield stream, stamp_seconds(msg.header) or log_time, log_time, value


def _deserialize(reader: Any, raw: bytes, msgtype: str) -> Any:
    """CDR -> message. rmw_fastrtps (Kilted) may serialise a few bytes past the message's end, which rosbags'
    size check (3 bytes of padding at most) refuses; such messages are read up to their end."""
    try:
        return reader.deserialize(raw, msgtype)
    except Exception as exc:
        if "size mismatch" not in str(exc) or bytes(raw[:2]) != b"\x00\x01":
            raise
        msgdef = reader.typestore.get_msgdef(msgtype)
        message, _end = msgdef.deserialize_cdr_le(memoryview(raw)[4:], 0, msgdef.cls, reader.typestore)
        return message


def convert(bags: Iterable[Path], out: Path, spec: BagSpec) -> dict[str, Any]:
    """Convert each bag into one episode of a new dataset at `out`. Raises BagError/DatasetError, writing nothing."""
    bags = [Path(b) for b in bags]
    if not spec.task:
        raise BagError("no task text: pass --task or set task in the YAML")
    if out.exists():
        raise BagError(f"{out} exists; choose a new dataset folder")
    for bag in bags:
        check_bag(bag, spec)
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    writer: LeRobotDatasetWriter | None = None
    summary: dict[str, Any] = {"out": str(out), "episodes": []}
    started = time.perf_counter()
    try:
        for bag in bags:
            aligner = FrameAligner(
                tuple(spec.topics()), next(iter(spec.cameras)), spec.fps, spec.max_age, spec.tolerance
            )
            aligner.begin(-math.inf)
            invalid = dict.fromkeys(spec.topics(), 0)
            frames = []
            for stream, stamp, log_time, value in read_samples(bag, spec):
                if value is None:
                    invalid[stream] += 1
                    continue
                aligner.add(stream, stamp, value)
                frames.extend(aligner.poll(log_time - spec.latency))
                writer = _write(frames, writer, partial, spec)
                frames.clear()
            writer = _write(aligner.end(), writer, partial, spec)
            if writer is None or writer.pending_frames == 0:
                raise BagError(
                    f"{bag}: no complete frame (every frame lacked a fresh sample: {aligner.stats.as_dict()})"
                )
            episode = writer.save_episode()
            summary["episodes"].append(
                {"bag": str(bag), "episode": episode, "invalid": invalid} | aligner.stats.as_dict()
            )
        assert writer is not None
        writer.close()
        partial.replace(out)
    except BaseException:
        if writer is not None and not writer.closed:
            with contextlib.suppress(DatasetError):  # nothing saved yet: nothing to finish
                writer.close()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    frames_total = sum(e["frames"] for e in summary["episodes"])
    return summary | {"frames": frames_total, "seconds": seconds, "frames_per_second": frames_total / seconds}


def _write(frames: list, writer: LeRobotDatasetWriter | None, root: Path, spec: BagSpec) -> LeRobotDatasetWriter | None:
    for frame in frames:
        if writer is None:
            cameras = {name: tuple(frame.values[name].shape[:2]) for name in spec.cameras}
            writer = LeRobotDatasetWriter(
                root, spec.fps, cameras, robot_type=spec.robot_type, vcodec=spec.vcodec, commit_each_episode=True
            )
        images = {name: frame.values[name] for name in spec.cameras}
        writer.add_frame(frame.values[STATE], frame.values[ACTION], images, spec.task)
    return writer


def write_bag(path: Path, records: Iterable[tuple[str, str, int, bytes]], storage: str = "mcap") -> None:
    """Write CDR-serialised messages `(topic, msgtype, log time ns, cdr bytes)` into a new rosbag2 (tests, benches)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_KILTED)
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections: dict[str, Any] = {}
        for topic, msgtype, log_ns, data in records:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=typestore)
            writer.write(connections[topic], log_ns, data)


# ---- CLI -------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mole-vla bag2lerobot", description=__doc__.splitlines()[0])
    parser.add_argument("bags", nargs="+", type=Path, help="rosbag2 folders (or .mcap/.db3 files), one episode each")
    parser.add_argument("--out", required=True, type=Path, help="new dataset folder")
    parser.add_argument("--config", type=Path, help="YAML with the keys below (arguments override it)")
    parser.add_argument("--camera", action="append", metavar="NAME=TOPIC", help="camera (repeat for several)")
    parser.add_argument("--joint-states", help="observed joint state topic")
    parser.add_argument("--action", help="commanded action topic (leader/joint_states or joint_command)")
    parser.add_argument("--fps", type=int, help="dataset frame rate, Hz")
    parser.add_argument("--task", help="task text of the episodes")
    parser.add_argument("--max-age", type=float, help="oldest sample a frame may take, s")
    parser.add_argument("--tolerance", type=float, help="stamp jitter accepted after a frame's time, s")
    parser.add_argument("--latency", type=float, help="how long after its time a frame is decided, s")
    parser.add_argument("--vcodec", choices=("libx264", "libsvtav1"), help="video encoder")
    return parser


def spec_from_args(args: argparse.Namespace) -> BagSpec:
    values: dict[str, Any] = {}
    if args.config is not None:
        loaded = yaml.safe_load(args.config.read_text()) or {}
        known = {f.name for f in fields(BagSpec)}
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise BagError(f"{args.config}: unknown keys {unknown}; known: {sorted(known)}")
        values.update(loaded)
    if args.camera:
        cameras = {}
        for item in args.camera:
            name, sep, topic = item.partition("=")
            if not sep or not name or not topic:
                raise BagError(f"--camera {item!r}: expected NAME=TOPIC")
            cameras[name] = topic
        values["cameras"] = cameras
    for key in ("joint_states", "action", "fps", "task", "max_age", "tolerance", "latency", "vcodec"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    spec = BagSpec(**values)
    if not isinstance(spec.cameras, dict) or not spec.cameras:
        raise BagError("cameras must map at least one camera name to an image topic")
    return spec


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = spec_from_args(args)
        summary = convert(args.bags, args.out, spec)
    except (BagError, DatasetError, ValueError, OSError) as exc:
        print(f"mole-vla bag2lerobot: {exc}; nothing written", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
