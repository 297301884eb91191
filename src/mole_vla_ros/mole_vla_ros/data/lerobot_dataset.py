"""LeRobot dataset format v3.0: a writer (sim recorder, ROS recorder) and a reader (training), no LeRobot import.

On-disk layout (what LeRobot 0.6 writes and reads):

    meta/info.json                              features (+ our "unit" on state/action), fps, paths, counts
    meta/stats.json                             per feature min/max/mean/std/count
    meta/tasks.parquet                          task text (pandas index "task") -> task_index
    meta/episodes/chunk-000/file-000.parquet    one row per episode: length, data and video ranges
    data/chunk-000/file-000.parquet             one row per frame, every episode
    videos/<image key>/chunk-000/file-000.mp4   one stream per camera, episodes back to back

Units: our datasets store joints in radians, in `so100_driver.joints` order, and say so in info.json
(`"unit": "rad"` in the state and action features). LeRobot's own SO-100 datasets hold degrees or its normalised
ranges (-100..100, gripper 0..100) and do not record which: the reader converts by what the metadata says (or what
the caller asserts with `units=`) and refuses a dataset whose units it cannot know.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq

from mole_vla_ros.data.video_encoder import (
    EncoderError,
    EncoderProcess,
    ImageSums,
    InlineEncoder,
    encode,
    finish_video,
    open_video,
)
from so100_driver.joints import JOINT_NAMES, joints_for

CODEBASE_VERSION = "v3.0"
CHUNK = "chunk-000/file-000"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
STATE, ACTION = "observation.state", "action"
ENV_STATE = "observation.environment_state"  # optional: a vector the scene's own state (LeRobot's sim datasets)
IMAGE_PREFIX = "observation.images."
REQUIRED_COLUMNS = (STATE, ACTION, "timestamp", "frame_index", "episode_index", "index", "task_index")
UNITS = ("rad", "deg", "range_m100_100")
VIDEO_CODECS = {"libsvtav1": "av1", "libx264": "h264"}  # PyAV encoder -> info.json's video.codec


class DatasetError(ValueError):
    """A dataset that cannot be read (or written) as asked; the message says what is wrong and where."""


# ----------------------------------------------------------------------------------------------------- writer


class LeRobotDatasetWriter:
    """Writes episodes frame by frame: `add_frame(...)` ..., `save_episode()` (or `discard_episode()`), `close()`.

    Args:
        root: dataset folder (created; must not hold a dataset already, unless `append`).
        fps: frame rate, Hz (timestamp = frame_index / fps).
        cameras: camera name -> (height, width); stored as videos `observation.images.<name>`.
        robot_type: info.json's robot_type.
        joint_names: joint order of state and action (radians).
        vcodec: PyAV encoder; AV1 ("libsvtav1") is LeRobot's default, "libx264" is faster to encode.
        commit_each_episode: crash-safe mode for live recording. Each frame's images are encoded as it arrives
            (into a partial file under `.partial/`, so memory stays flat), and `save_episode()` commits the episode
            at once: its own data and video files (file index = episode, as LeRobot does when it rolls files
            over), then the metadata, `meta/info.json` last. Every file is written under a temporary name and
            renamed. info.json is the commit point: the reader ignores anything past its `total_episodes`, so a
            process killed at any moment leaves a dataset that loads with the episodes saved so far. Without it
            (the default) episodes are concatenated into one data file and one video per camera, written by
            `close()`.
        append: with `commit_each_episode`, a `root` that already holds a dataset is resumed: new episodes are
            numbered after its committed ones (anything past its info.json's `total_episodes`, e.g. files of an
            episode killed before its commit, is overwritten), and stats, tasks and info.json cover old and new.
            The dataset must have the same fps, cameras (names and sizes), joint names, units (rad) and codec;
            otherwise DatasetError names each mismatch. Without `append`, a folder holding a dataset is refused.
        encoder_process: with `commit_each_episode`, encode (and take image stats) in a worker process fed
            through a pipe, so a live recorder's callbacks never wait on the encoder or its GIL (`video_encoder`).
    """

    def __init__(
        self,
        root: str | Path,
        fps: int,
        cameras: dict[str, tuple[int, int]],
        robot_type: str = "so100",
        joint_names: Sequence[str] = JOINT_NAMES,
        vcodec: str = "libsvtav1",
        commit_each_episode: bool = False,
        append: bool = False,
        encoder_process: bool = False,
        environment_state_dim: int = 0,
    ) -> None:
        self.root = Path(root)
        existing = (self.root / "meta" / "info.json").exists()
        if existing and not append:
            raise DatasetError(f"{self.root} already holds a dataset; choose a new folder")
        if append and not commit_each_episode:
            # Appending rewrites only metadata; the concatenated mode would have to re-encode the old videos.
            raise DatasetError("append needs commit_each_episode=True (episodes in files of their own)")
        if not 1 <= fps <= 1000:
            raise DatasetError(f"fps {fps} outside 1..1000")
        self.fps = int(fps)
        self.cameras = dict(cameras)
        self.robot_type = robot_type
        self.joint_names = tuple(joint_names)
        self.vcodec = vcodec
        self.commit_each_episode = commit_each_episode
        if environment_state_dim < 0:
            raise DatasetError(f"environment_state_dim must be >= 0, got {environment_state_dim}")
        self.environment_state_dim = int(environment_state_dim)
        self._rows: dict[str, list] = {c: [] for c in self._columns}
        self._episodes: list[dict] = []
        self._tasks: dict[str, int] = {}
        # Frames of the episode being recorded: (state, action, images or None once encoded, task).
        self._buffer: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray] | None, str]] = []
        self._env_buffer: list[np.ndarray] = []  # the episode's environment states, beside _buffer
        self._video: dict[str, tuple[av.container.OutputContainer, av.video.stream.VideoStream]] = {}
        self._video_frames = dict.fromkeys(self.cameras, 0)
        self._image_sums = {c: ImageSums() for c in self.cameras}
        self._pending_sums = {c: ImageSums() for c in self.cameras}  # the unsaved episode's
        self.closed = False
        self.resumed_episodes = 0
        if existing:
            self._resume()
        # Live mode's per-episode videos (the concatenated mode encodes at save and close, in this process).
        self._encoder: InlineEncoder | EncoderProcess | None = None
        if commit_each_episode:
            self._encoder = (EncoderProcess if encoder_process else InlineEncoder)(self.fps, self.vcodec)

    def _resume(self) -> None:
        """Load the committed episodes of the dataset at root (rows, episodes, tasks, image stats) to append to."""
        info = json.loads((self.root / "meta" / "info.json").read_text())
        mismatches = append_mismatches(info, self.fps, self.cameras, self.joint_names, self.vcodec)
        if mismatches:
            raise DatasetError(
                f"{self.root} holds a dataset with other features; cannot append: " + "; ".join(mismatches)
            )
        existing = LeRobotDatasetReader(self.root)
        # The reader gives joints in JOINT_NAMES order; rows are written in this writer's order.
        order = [JOINT_NAMES.index(name) for name in self.joint_names]
        self._rows[STATE] = list(existing.state[:, order].astype(np.float32))
        self._rows[ACTION] = list(existing.action[:, order].astype(np.float32))
        self._rows["timestamp"] = list(existing.timestamp.astype(np.float32))
        if self.environment_state_dim:
            found = existing.environment_state
            if found is None or found.shape[1] != self.environment_state_dim:
                width = None if found is None else found.shape[1]
                raise DatasetError(
                    f"{self.root}: cannot append {self.environment_state_dim}-value environment states to a dataset "
                    f"whose {ENV_STATE} has {width}"
                )
            self._rows[ENV_STATE] = list(found.astype(np.float32))
        for key, values in (
            ("frame_index", existing.frame_index),
            ("episode_index", existing.episode_index),
            ("index", existing.index),
            ("task_index", existing.task_index),
        ):
            self._rows[key] = [int(v) for v in values]
        self._episodes = [existing.episodes[ep] for ep in sorted(existing.episodes)]
        if [int(r["episode_index"]) for r in self._episodes] != list(range(len(self._episodes))):
            raise DatasetError(f"{self.root}: episode indices are not 0..{len(self._episodes) - 1}; cannot append")
        self._tasks = {text: int(index) for index, text in sorted(existing.tasks.items())}
        stats_path = self.root / "meta" / "stats.json"
        stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
        for name in self.cameras:
            if IMAGE_PREFIX + name in stats:
                self._image_sums[name] = ImageSums.from_stats(stats[IMAGE_PREFIX + name])
        self.resumed_episodes = len(self._episodes)
        shutil.rmtree(self.root / ".partial", ignore_errors=True)  # an episode killed mid-way: never committed

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def _columns(self) -> tuple[str, ...]:
        return REQUIRED_COLUMNS + ((ENV_STATE,) if self.environment_state_dim else ())

    @property
    def pending_frames(self) -> int:
        """Frames added to the episode being recorded."""
        return len(self._buffer)

    def add_frame(
        self,
        state: Sequence[float],
        action: Sequence[float],
        images: dict[str, np.ndarray],
        task: str,
        environment_state: Sequence[float] | None = None,
    ) -> None:
        """One frame of the episode being recorded; `environment_state` exactly when the writer was made with
        environment_state_dim > 0."""
        if self.closed:
            raise DatasetError("the writer is closed")
        env_arr = None
        if self.environment_state_dim or environment_state is not None:
            env_arr = np.asarray([] if environment_state is None else environment_state, dtype=np.float32).reshape(-1)
            if env_arr.shape != (self.environment_state_dim,) or not np.all(np.isfinite(env_arr)):
                raise DatasetError(
                    f"environment_state must be {self.environment_state_dim} finite values (the writer's "
                    f"environment_state_dim), got {environment_state!r}"
                )
        n = len(self.joint_names)
        state_arr = np.asarray(state, dtype=np.float32).reshape(-1)
        action_arr = np.asarray(action, dtype=np.float32).reshape(-1)
        if state_arr.shape != (n,) or action_arr.shape != (n,):
            raise DatasetError(f"state and action must have {n} values, got {state_arr.shape} and {action_arr.shape}")
        if not (np.all(np.isfinite(state_arr)) and np.all(np.isfinite(action_arr))):
            raise DatasetError("state and action must be finite")
        if set(images) != set(self.cameras):
            raise DatasetError(f"frame has cameras {sorted(images)}, the dataset {sorted(self.cameras)}")
        for name, image in images.items():
            if image.shape != (*self.cameras[name], 3) or image.dtype != np.uint8:
                raise DatasetError(
                    f"camera {name}: expected uint8 {(*self.cameras[name], 3)}, got {image.dtype} {image.shape}"
                )
        if not task:
            raise DatasetError("every frame needs a task text")
        if self._encoder is not None:
            try:
                for name, image in images.items():
                    if not self._encoder.is_open(name):
                        self._encoder.open(name, self._partial_video(name), self.cameras[name])
                    self._encoder.frame(name, image, pts=len(self._buffer))
            except EncoderError as exc:
                raise DatasetError(f"{self.root}: {exc}") from exc
            self._buffer.append((state_arr, action_arr, None, task))
        else:
            self._buffer.append((state_arr, action_arr, {k: v.copy() for k, v in images.items()}, task))
        if env_arr is not None:
            self._env_buffer.append(env_arr)

    def discard_episode(self) -> None:
        self._buffer.clear()
        self._env_buffer.clear()
        self._pending_sums = {c: ImageSums() for c in self.cameras}
        if self._encoder is not None:
            for name in self.cameras:
                if self._encoder.is_open(name):
                    with contextlib.suppress(EncoderError):  # the failure was the encoder's; the episode goes
                        self._encoder.discard(name)
                    self._partial_video(name).unlink(missing_ok=True)

    def save_episode(self) -> int:
        """Append the buffered frames as one episode; returns its index."""
        if self.closed:
            raise DatasetError("the writer is closed")
        if not self._buffer:
            raise DatasetError("no frames to save in this episode")
        if self._encoder is not None:
            # The videos first: an encoder failure drops the episode before anything of it reaches the index.
            try:
                for name in self.cameras:
                    self._pending_sums[name] = self._encoder.finish(name)
            except EncoderError as exc:
                self.discard_episode()
                raise DatasetError(f"{self.root}: episode not saved: {exc}") from exc
        episode = len(self._episodes)
        start = len(self._rows["index"])
        # Committed episodes get files of their own, numbered like LeRobot's rolled-over files.
        chunk, file = (episode // 1000, episode % 1000) if self.commit_each_episode else (0, 0)
        tasks = []
        for frame_index, (state, action, _images, task) in enumerate(self._buffer):
            if task not in self._tasks:
                self._tasks[task] = len(self._tasks)
            if task not in tasks:
                tasks.append(task)
            self._rows[STATE].append(state)
            self._rows[ACTION].append(action)
            self._rows["timestamp"].append(np.float32(frame_index / self.fps))
            self._rows["frame_index"].append(frame_index)
            self._rows["episode_index"].append(episode)
            self._rows["index"].append(start + frame_index)
            self._rows["task_index"].append(self._tasks[task])
        if self.environment_state_dim:
            self._rows[ENV_STATE].extend(self._env_buffer)
        meta: dict = {
            "episode_index": episode,
            "tasks": tasks,
            "length": len(self._buffer),
            "data/chunk_index": chunk,
            "data/file_index": file,
            "dataset_from_index": start,
            "dataset_to_index": start + len(self._buffer),
        }
        for name in self.cameras:
            key = IMAGE_PREFIX + name
            if self.commit_each_episode:
                final = self.root / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
                final.parent.mkdir(parents=True, exist_ok=True)
                self._partial_video(name).replace(final)
                first, last = 0, len(self._buffer)
            else:
                first = self._video_frames[name]
                for pts, (_s, _a, images, _t) in enumerate(self._buffer, start=first):
                    self._encode_frame(name, images[name], pts)  # type: ignore[index]
                self._video_frames[name] = last = first + len(self._buffer)
            meta[f"videos/{key}/chunk_index"] = chunk
            meta[f"videos/{key}/file_index"] = file
            meta[f"videos/{key}/from_timestamp"] = first / self.fps
            meta[f"videos/{key}/to_timestamp"] = last / self.fps
            self._image_sums[name].merge(self._pending_sums[name])
        meta["meta/episodes/chunk_index"] = 0
        meta["meta/episodes/file_index"] = 0
        self._episodes.append(meta)
        self._buffer.clear()
        self._env_buffer.clear()
        self._pending_sums = {c: ImageSums() for c in self.cameras}
        if self.commit_each_episode:
            self._write_parquet(
                self._data_table(start, start + meta["length"]),
                self.root / DATA_PATH.format(chunk_index=chunk, file_index=file),
            )
            self._write_meta()
        return episode

    def _partial_video(self, name: str) -> Path:
        return self.root / ".partial" / f"{IMAGE_PREFIX}{name}.mp4"

    def _encode_frame(self, name: str, image: np.ndarray, pts: int) -> None:
        """The concatenated mode: one video per camera, opened at the first frame."""
        if name not in self._video:
            path = self.root / VIDEO_PATH.format(video_key=IMAGE_PREFIX + name, chunk_index=0, file_index=0)
            self._video[name] = open_video(path, self.cameras[name], self.fps, self.vcodec)
        container, stream = self._video[name]
        encode(container, stream, image, pts)
        self._pending_sums[name].add(image)

    def close(self) -> None:
        """Finish the videos and write data and metadata. A pending (unsaved) episode is dropped."""
        if self.closed:
            return
        if self._encoder is not None:
            self.discard_episode()
            self._encoder.close()
        self.closed = True
        self._buffer.clear()
        for container, stream in self._video.values():
            finish_video(container, stream)
        self._video.clear()
        shutil.rmtree(self.root / ".partial", ignore_errors=True)
        if not self._episodes:
            shutil.rmtree(self.root / "videos", ignore_errors=True)
            raise DatasetError("no episode was saved; nothing written")
        if not self.commit_each_episode:
            data_path = self.root / DATA_PATH.format(chunk_index=0, file_index=0)
            self._write_parquet(self._data_table(0, len(self._rows["index"])), data_path)
            self._write_meta()

    def _data_table(self, start: int, end: int) -> pa.Table:
        vec = pa.list_(pa.float32(), len(self.joint_names))
        rows = {key: values[start:end] for key, values in self._rows.items()}
        env = {}
        if self.environment_state_dim:
            env_type = pa.list_(pa.float32(), self.environment_state_dim)
            env = {ENV_STATE: pa.array([r.tolist() for r in rows[ENV_STATE]], type=env_type)}
        return pa.table(
            {
                **env,
                STATE: pa.array([r.tolist() for r in rows[STATE]], type=vec),
                ACTION: pa.array([r.tolist() for r in rows[ACTION]], type=vec),
                "timestamp": pa.array(rows["timestamp"], type=pa.float32()),
                "frame_index": pa.array(rows["frame_index"], type=pa.int64()),
                "episode_index": pa.array(rows["episode_index"], type=pa.int64()),
                "index": pa.array(rows["index"], type=pa.int64()),
                "task_index": pa.array(rows["task_index"], type=pa.int64()),
            }
        )

    def _write_meta(self) -> None:
        """Episodes, tasks, stats, then info.json last (the commit point: a dataset without it is unfinished)."""
        total = len(self._rows["index"])
        self._write_parquet(pa.Table.from_pylist(self._episodes), self.root / "meta" / "episodes" / f"{CHUNK}.parquet")
        self._write_tasks()
        _write_atomic(self.root / "meta" / "stats.json", json.dumps(self._stats(self._data_table(0, total)), indent=2))
        _write_atomic(self.root / "meta" / "info.json", json.dumps(self._info(total), indent=2))

    @staticmethod
    def _write_parquet(table: pa.Table, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")  # a name no *.parquet glob picks up
        pq.write_table(table, tmp)
        tmp.replace(path)

    def _write_tasks(self) -> None:
        # LeRobot reads tasks.parquet with pandas and takes the task text from the index: record that index in
        # the pandas metadata (pandas itself is not a dependency here).
        table = pa.table(
            {
                "task_index": pa.array(list(self._tasks.values()), type=pa.int64()),
                "task": pa.array(list(self._tasks), type=pa.string()),
            }
        )
        pandas_meta = {
            "index_columns": ["task"],
            "column_indexes": [
                {
                    "name": None,
                    "field_name": None,
                    "pandas_type": "unicode",
                    "numpy_type": "object",
                    "metadata": {"encoding": "UTF-8"},
                }
            ],
            "columns": [
                {
                    "name": "task_index",
                    "field_name": "task_index",
                    "pandas_type": "int64",
                    "numpy_type": "int64",
                    "metadata": None,
                },
                {
                    "name": "task",
                    "field_name": "task",
                    "pandas_type": "unicode",
                    "numpy_type": "object",
                    "metadata": None,
                },
            ],
            "creator": {"library": "pyarrow", "version": pa.__version__},
            "pandas_version": "2.2.3",
        }
        table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
        self._write_parquet(table, self.root / "meta" / "tasks.parquet")

    def _stats(self, data: pa.Table) -> dict:
        stats: dict[str, dict] = {}
        for key in (k for k in (STATE, ACTION, ENV_STATE) if k in data.column_names):
            values = np.asarray(data[key].to_pylist(), dtype=np.float64)
            stats[key] = _vector_stats(values)
        for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
            stats[key] = _vector_stats(np.asarray(data[key].to_pylist(), dtype=np.float64).reshape(-1, 1))
        for name, sums in self._image_sums.items():
            stats[IMAGE_PREFIX + name] = sums.stats()
        return stats

    def _info(self, total_frames: int) -> dict:
        motor_names = [f"{name}.pos" for name in self.joint_names]
        # "unit" is ours, inside the feature so it survives LeRobot's own rewrites of info.json (it drops unknown
        # top-level keys, with a warning); joint order is the feature's "names".
        features: dict[str, dict] = {
            ACTION: {"dtype": "float32", "shape": [len(motor_names)], "names": motor_names, "unit": "rad"},
            STATE: {"dtype": "float32", "shape": [len(motor_names)], "names": motor_names, "unit": "rad"},
        }
        if self.environment_state_dim:
            features[ENV_STATE] = {"dtype": "float32", "shape": [self.environment_state_dim], "names": None}
        for name, (height, width) in self.cameras.items():
            features[IMAGE_PREFIX + name] = {
                "dtype": "video",
                "shape": [height, width, 3],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.height": height,
                    "video.width": width,
                    "video.codec": VIDEO_CODECS.get(self.vcodec, self.vcodec),
                    "video.pix_fmt": "yuv420p",
                    "video.is_depth_map": False,
                    "video.fps": self.fps,
                    "video.channels": 3,
                    "has_audio": False,
                },
            }
        features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
        for key in ("frame_index", "episode_index", "index", "task_index"):
            features[key] = {"dtype": "int64", "shape": [1], "names": None}
        return {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": len(self._episodes),
            "total_frames": total_frames,
            "total_tasks": len(self._tasks),
            "chunks_size": 1000,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self._episodes)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.cameras else None,
            "features": features,
        }

    def __enter__(self) -> LeRobotDatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _vector_stats(values: np.ndarray) -> dict[str, list]:
    return {
        "min": values.min(0).tolist(),
        "max": values.max(0).tolist(),
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "count": [len(values)],
    }


def append_mismatches(
    info: dict,
    fps: int,
    cameras: dict[str, tuple[int, int] | None],
    joint_names: Sequence[str] = JOINT_NAMES,
    vcodec: str = "libsvtav1",
) -> list[str]:
    """What keeps a writer with these settings from appending to the dataset of `info` (meta/info.json).

    Empty when appendable. A camera size of None is not checked (not known yet, e.g. before the first image).
    """
    out = []
    if int(info.get("fps", -1)) != int(fps):
        out.append(f"fps {info.get('fps')} in the dataset, {fps} here")
    features = info.get("features", {})
    theirs = {
        key[len(IMAGE_PREFIX) :]: tuple(feature.get("shape", [])[:2])
        for key, feature in features.items()
        if key.startswith(IMAGE_PREFIX)
    }
    if set(theirs) != set(cameras):
        out.append(f"cameras {sorted(theirs)} in the dataset, {sorted(cameras)} here")
    else:
        for name, size in sorted(cameras.items()):
            if size is not None and theirs[name] != tuple(size):
                out.append(
                    f"camera {name} is {theirs[name][1]}x{theirs[name][0]} in the dataset, {size[1]}x{size[0]} here"
                )
    motors = [f"{name}.pos" for name in joint_names]
    for key in (STATE, ACTION):
        names = features.get(key, {}).get("names")
        if names != motors:
            out.append(f"{key} joints {names} in the dataset, {motors} here")
        unit = features.get(key, {}).get("unit")
        if unit != "rad":
            out.append(f"{key} unit {unit!r} in the dataset, 'rad' here")
    codec = VIDEO_CODECS.get(vcodec, vcodec)
    codecs = {f.get("info", {}).get("video.codec") for k, f in features.items() if k.startswith(IMAGE_PREFIX)}
    if codecs - {codec}:
        out.append(f"video codec {sorted(str(c) for c in codecs)} in the dataset, {codec} ({vcodec}) here")
    return out


# ----------------------------------------------------------------------------------------------------- reader


def to_radians(values: np.ndarray, units: str, arm: str = "so100") -> np.ndarray:
    """Convert (..., 6) joint values from `units` to radians in the calibrated joint space.

    "range_m100_100" is LeRobot's normalised mode: -100..100 spans each joint's calibrated range (gripper
    0..100); it is mapped linearly onto the joints.py limits, which stand in for the calibration it came from.
    """
    if units == "rad":
        return values.astype(np.float32)
    if units == "deg":
        return np.radians(values).astype(np.float32)
    if units == "range_m100_100":
        specs = joints_for(arm)
        lower = np.array([j.lower for j in specs])
        upper = np.array([j.upper for j in specs])
        low_in = np.array([-100.0] * (len(specs) - 1) + [0.0])
        frac = (values - low_in) / (100.0 - low_in)
        return (lower + frac * (upper - lower)).astype(np.float32)
    raise DatasetError(f"unknown joint units {units!r}; expected one of {UNITS}")


@dataclass
class Sample:
    """One training sample: the frame's observation, its task text, and the next H actions.

    `actions` (H, 6) rad starts at this frame's action; past the episode's end it repeats the last action and
    `action_is_pad` (H,) is True there.
    """

    images: dict[str, np.ndarray]
    state: np.ndarray
    task: str
    actions: np.ndarray
    action_is_pad: np.ndarray
    episode_index: int
    frame_index: int
    timestamp: float


class LeRobotDatasetReader:
    """Reads a LeRobot v3.0 dataset for training: `len(ds)`, `ds[i] -> Sample`.

    Args:
        root: dataset folder.
        chunk_size: H, the length of the action chunk per sample.
        units: the joint units, when info.json does not say ("rad", "deg", "range_m100_100").
        cameras: camera names to load (default: all video features).
        arm: the arm whose joints.py limits the normalised ranges map onto.

    Decoded frames are cached per camera the first time a camera is read (one pass over the video file), since
    decoding per sample is too slow on a CPU.
    """

    def __init__(
        self,
        root: str | Path,
        chunk_size: int = 1,
        units: str | None = None,
        cameras: Sequence[str] | None = None,
        arm: str = "so100",
    ) -> None:
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.exists():
            raise DatasetError(f"{self.root}: no meta/info.json (not a LeRobot dataset, or an unfinished recording)")
        self.info = json.loads(info_path.read_text())
        version = self.info.get("codebase_version")
        if version != CODEBASE_VERSION:
            raise DatasetError(
                f"{self.root}: dataset format {version!r}; only LeRobot {CODEBASE_VERSION} is read "
                "(convert older datasets with LeRobot's convert_dataset_v21_to_v30)"
            )
        if chunk_size < 1:
            raise DatasetError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self.fps = int(self.info["fps"])
        features = self.info["features"]
        recorded = {features.get(key, {}).get("unit") for key in (STATE, ACTION)} - {None}
        if len(recorded) > 1:
            raise DatasetError(f"{self.root}: state and action are in different units {sorted(recorded)}")
        self.units = next(iter(recorded), None) or units
        if self.units is None:
            raise DatasetError(
                f"{self.root}: info.json does not record joint units (LeRobot's SO-100 datasets hold degrees or "
                f"-100..100 ranges); pass units= one of {UNITS} if you know which"
            )
        if self.units not in UNITS:
            raise DatasetError(f"{self.root}: unknown joint units {self.units!r}; expected one of {UNITS}")
        self._order = {key: self._joint_order(features, key) for key in (STATE, ACTION)}
        all_cameras = [
            k[len(IMAGE_PREFIX) :]
            for k, f in features.items()
            if k.startswith(IMAGE_PREFIX) and f.get("dtype") == "video"
        ]
        self.cameras = list(all_cameras if cameras is None else cameras)
        for name in self.cameras:
            if name not in all_cameras:
                raise DatasetError(f"{self.root}: no camera {name!r}; the dataset has {all_cameras}")
        self.arm = arm
        self._load_tables()
        self._frames: dict[str, np.ndarray] = {}

    def _joint_order(self, features: dict, key: str) -> np.ndarray:
        if key not in features:
            raise DatasetError(f"{self.root}: info.json has no feature {key!r}")
        names = features[key].get("names")
        if isinstance(names, dict):  # older LeRobot writes {"motors": [...]}
            names = next(iter(names.values()))
        if not names:
            names = list(JOINT_NAMES)
        plain = [str(n).removesuffix(".pos") for n in names]
        missing = [j for j in JOINT_NAMES if j not in plain]
        if missing:
            raise DatasetError(f"{self.root}: feature {key!r} names {plain}, missing joints {missing}")
        return np.array([plain.index(j) for j in JOINT_NAMES])

    def _load_tables(self) -> None:
        # info.json is the commit point of a recording: episodes past its total_episodes (a recorder killed
        # between writing an episode's files and its info.json) are not part of the dataset.
        committed = self.info.get("total_episodes")
        episode_files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not episode_files:
            raise DatasetError(f"{self.root}: no meta/episodes/chunk-*/file-*.parquet")
        rows = [row for f in episode_files for row in pq.read_table(f).to_pylist()]
        if committed is not None:
            rows = [r for r in rows if int(r["episode_index"]) < int(committed)]
        files = sorted((self.root / "data").glob("chunk-*/file-*.parquet"))
        if not files:
            raise DatasetError(f"{self.root}: no data/chunk-*/file-*.parquet files")
        if rows and all("data/chunk_index" in r and "data/file_index" in r for r in rows):
            referenced = {
                self.root
                / DATA_PATH.format(chunk_index=int(r["data/chunk_index"]), file_index=int(r["data/file_index"]))
                for r in rows
            }
            files = [f for f in files if f in referenced]
        tables = [pq.read_table(f) for f in files]
        for f, t in zip(files, tables, strict=True):
            missing = [c for c in REQUIRED_COLUMNS if c not in t.column_names]
            if missing:
                raise DatasetError(f"{f}: missing columns {missing}")
        data = pa.concat_tables([t.select(list(REQUIRED_COLUMNS)) for t in tables])
        if committed is not None:
            data = data.filter(pa.compute.less(data["episode_index"], int(committed)))
        order = np.argsort(np.asarray(data["index"]), kind="stable")
        self.index = np.asarray(data["index"])[order]
        if not np.array_equal(self.index, np.arange(len(self.index))):
            raise DatasetError(f"{self.root}: frame indices are not 0..{len(self.index) - 1} (missing frames?)")
        raw_state = np.asarray(data[STATE].to_pylist(), dtype=np.float64)[order][:, self._order[STATE]]
        raw_action = np.asarray(data[ACTION].to_pylist(), dtype=np.float64)[order][:, self._order[ACTION]]
        self.state = to_radians(raw_state, self.units, self.arm)
        self.action = to_radians(raw_action, self.units, self.arm)
        self.timestamp = np.asarray(data["timestamp"], dtype=np.float64)[order]
        self.frame_index = np.asarray(data["frame_index"])[order]
        self.episode_index = np.asarray(data["episode_index"])[order]
        self.task_index = np.asarray(data["task_index"])[order]
        # Optional: only datasets whose every data file has the column (a sim's recordings, not a real arm's).
        self.environment_state: np.ndarray | None = None
        if ENV_STATE in self.info["features"] and all(ENV_STATE in t.column_names for t in tables):
            env = pa.concat_tables([t.select([ENV_STATE, "episode_index"]) for t in tables])
            if committed is not None:
                env = env.filter(pa.compute.less(env["episode_index"], int(committed)))
            self.environment_state = np.asarray(env[ENV_STATE].to_pylist(), dtype=np.float32)[order]

        tasks = pq.read_table(self.root / "meta" / "tasks.parquet")
        text_column = "task" if "task" in tasks.column_names else "__index_level_0__"
        self.tasks = dict(zip(tasks["task_index"].to_pylist(), tasks[text_column].to_pylist(), strict=True))
        unknown = set(np.unique(self.task_index).tolist()) - set(self.tasks)
        if unknown:
            raise DatasetError(f"{self.root}: frames refer to task indices {sorted(unknown)} not in tasks.parquet")

        self.episodes = {int(r["episode_index"]): r for r in rows}
        # Per frame: the end (exclusive) of its episode, for action chunks that stop at the episode boundary.
        self._episode_end = np.empty(len(self.index), dtype=np.int64)
        for ep, row in self.episodes.items():
            start, end = int(row["dataset_from_index"]), int(row["dataset_to_index"])
            if end > len(self.index) or np.any(self.episode_index[start:end] != ep):
                raise DatasetError(
                    f"{self.root}: episode {ep} claims frames {start}..{end} that the data does not hold"
                )
            self._episode_end[start:end] = end
        if set(np.unique(self.episode_index).tolist()) - set(self.episodes):
            raise DatasetError(f"{self.root}: frames of episodes missing from meta/episodes")

    def __len__(self) -> int:
        return len(self.index)

    def task_of(self, i: int) -> str:
        return self.tasks[int(self.task_index[i])]

    def frames(self, camera: str, cache: bool = True) -> np.ndarray:
        """All decoded frames of one camera, (N, H, W, 3) uint8 aligned with the dataset's rows (cached unless
        `cache` is false: a caller that converts them at once need not hold both copies)."""
        if camera in self._frames:
            return self._frames[camera]
        frames = self._decode(camera)
        if cache:
            self._frames[camera] = frames
        return frames

    def _decode(self, camera: str) -> np.ndarray:
        # Each video file is decoded once, as a stream: its frames go straight into the rows that show them, so
        # memory holds the output array and one frame, not a file's every decoded frame besides it.
        key = IMAGE_PREFIX + camera
        wanted: dict[tuple[int, int], dict[int, list[int]]] = {}  # file -> video frame -> rows showing it
        for _, row in sorted(self.episodes.items()):
            file_key = (int(row[f"videos/{key}/chunk_index"]), int(row[f"videos/{key}/file_index"]))
            start, end = int(row["dataset_from_index"]), int(row["dataset_to_index"])
            first = round(float(row[f"videos/{key}/from_timestamp"]) * self.fps)
            offsets = first + np.round(self.timestamp[start:end] * self.fps).astype(int)
            by_frame = wanted.setdefault(file_key, {})
            for row_i, offset in zip(range(start, end), offsets.tolist(), strict=True):
                by_frame.setdefault(offset, []).append(row_i)
        out: np.ndarray | None = None
        for file_key, by_frame in wanted.items():
            path = self.root / self.info["video_path"].format(
                video_key=key, chunk_index=file_key[0], file_index=file_key[1]
            )
            if not path.exists():
                raise DatasetError(f"{self.root}: video {path} missing")
            decoded = 0
            with av.open(str(path)) as container:
                for decoded, frame in enumerate(container.decode(video=0), start=1):
                    rows = by_frame.get(decoded - 1)
                    if rows:
                        image = frame.to_ndarray(format="rgb24")
                        if out is None:
                            out = np.empty((len(self), *image.shape), dtype=np.uint8)
                        out[rows] = image
            if max(by_frame) >= decoded:
                episode = int(self.episode_index[by_frame[max(by_frame)][0]])
                raise DatasetError(
                    f"{self.root}: camera {camera}: episode {episode} needs video frame {max(by_frame)}, "
                    f"the file has {decoded} (missing frames)"
                )
        assert out is not None
        return out

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} outside 0..{len(self) - 1}")
        i %= len(self)
        end = int(self._episode_end[i])
        idx = np.arange(i, i + self.chunk_size)
        pad = idx >= end
        actions = self.action[np.minimum(idx, end - 1)]
        return Sample(
            images={c: self.frames(c)[i] for c in self.cameras},
            state=self.state[i],
            task=self.task_of(i),
            actions=actions,
            action_is_pad=pad,
            episode_index=int(self.episode_index[i]),
            frame_index=int(self.frame_index[i]),
            timestamp=float(self.timestamp[i]),
        )

    def stats(self) -> dict:
        """meta/stats.json (normalisation statistics), converted to radians for state and action."""
        stats = json.loads((self.root / "meta" / "stats.json").read_text())
        for key in (STATE, ACTION):
            if key in stats and self.units != "rad":
                for name in ("min", "max", "mean"):
                    stats[key][name] = to_radians(np.array(stats[key][name]), self.units, self.arm).tolist()
                if self.units == "deg":
                    stats[key]["std"] = [math.radians(v) for v in stats[key]["std"]]
        return stats
