"""LeRobot v3.0 datasets: a recording round-trips through the reader; units, chunks and bad data are handled."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mole_vla_ros.data import record
from mole_vla_ros.data.lerobot_dataset import (
    ENV_STATE,
    DatasetError,
    LeRobotDatasetReader,
    LeRobotDatasetWriter,
    to_radians,
)
from so100_driver.joints import JOINT_NAMES, SO100_JOINTS

H, W = 32, 48


def _frames(n, seed):
    rng = np.random.default_rng(seed)
    states = rng.uniform(-1, 1, (n, 6)).astype(np.float32)
    actions = rng.uniform(-1, 1, (n, 6)).astype(np.float32)
    # Smooth, distinct images (video compression is lossy; flat colour blocks survive it well).
    images = []
    for i in range(n):
        image = np.zeros((H, W, 3), dtype=np.uint8)
        image[:, : W // 2] = (20 * (i % 10), 100, 200)
        image[:, W // 2 :] = (200, 40 + 10 * (i % 10), 60)
        images.append(image)
    return states, actions, images


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "synthetic"
    episodes = [(_frames(12, 0), "pick up the red cube"), (_frames(7, 1), "put the blue cube on the green one")]
    with LeRobotDatasetWriter(root, fps=30, cameras={"scene": (H, W)}, vcodec="libx264") as writer:
        writer.add_frame(np.zeros(6), np.zeros(6), {"scene": np.zeros((H, W, 3), np.uint8)}, "discarded")
        writer.discard_episode()
        for (states, actions, images), task in episodes:
            for s, a, img in zip(states, actions, images, strict=True):
                writer.add_frame(s, a, {"scene": img}, task)
            writer.save_episode()
    return root, episodes


def test_round_trip_values_are_identical(written):
    root, episodes = written
    ds = LeRobotDatasetReader(root, chunk_size=4)
    assert len(ds) == 19 and ds.cameras == ["scene"] and ds.fps == 30
    i = 0
    for ep, ((states, actions, images), task) in enumerate(episodes):
        for f in range(len(states)):
            sample = ds[i]
            np.testing.assert_array_equal(sample.state, states[f])
            np.testing.assert_array_equal(sample.actions[0], actions[f])
            assert sample.task == task and sample.episode_index == ep and sample.frame_index == f
            assert sample.timestamp == pytest.approx(f / 30)
            assert np.abs(sample.images["scene"].astype(int) - images[f]).mean() < 4
            i += 1
    assert set(ds.tasks.values()) == {t for _e, t in episodes}


def test_action_chunks_pad_at_the_episode_end(written):
    root, episodes = written
    ds = LeRobotDatasetReader(root, chunk_size=5)
    actions = episodes[0][0][1]
    last = ds[10]  # frames 10, 11 are real; then the episode ends
    np.testing.assert_array_equal(last.action_is_pad, [False, False, True, True, True])
    np.testing.assert_array_equal(last.actions[:2], actions[10:12])
    np.testing.assert_array_equal(last.actions[2:], np.repeat(actions[11:12], 3, axis=0))
    first_of_next = ds[12]
    assert first_of_next.episode_index == 1 and not first_of_next.action_is_pad.any()


def test_layout_and_metadata_follow_lerobot_v3(written):
    root, _ = written
    for rel in (
        "meta/info.json",
        "meta/stats.json",
        "meta/tasks.parquet",
        "meta/episodes/chunk-000/file-000.parquet",
        "data/chunk-000/file-000.parquet",
        "videos/observation.images.scene/chunk-000/file-000.mp4",
    ):
        assert (root / rel).is_file(), rel
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 2 and info["total_frames"] == 19
    assert info["features"]["action"]["unit"] == "rad"
    assert info["features"]["observation.state"]["names"] == [f"{j}.pos" for j in JOINT_NAMES]
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in episodes] == [(0, 12), (12, 19)]
    assert episodes[1]["videos/observation.images.scene/from_timestamp"] == pytest.approx(12 / 30)
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert b"pandas" in tasks.schema.metadata  # LeRobot reads the task text from the pandas index
    stats = json.loads((root / "meta/stats.json").read_text())
    assert len(stats["action"]["mean"]) == 6 and np.array(stats["observation.images.scene"]["mean"]).shape == (3, 1, 1)


def _copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def _edit_info(root, unit="rad", **changes):
    info = json.loads((root / "meta/info.json").read_text())
    info.update(changes)
    for key in ("observation.state", "action"):
        if unit is None:
            info["features"][key].pop("unit", None)
        else:
            info["features"][key]["unit"] = unit
    (root / "meta/info.json").write_text(json.dumps(info))


def test_degrees_are_converted_on_read(written, tmp_path):
    root = _copy(written[0], tmp_path)
    table = pq.read_table(root / "data/chunk-000/file-000.parquet")
    state = np.asarray(table["observation.state"].to_pylist(), dtype=np.float32)
    table = table.set_column(0, "observation.state", pa.array((state * 57.0).tolist(), type=pa.list_(pa.float32(), 6)))
    pq.write_table(table, root / "data/chunk-000/file-000.parquet")
    _edit_info(root, unit="deg")
    ds = LeRobotDatasetReader(root)
    np.testing.assert_allclose(ds[0].state, np.radians(state[0] * 57.0), rtol=1e-6)


def test_unknown_units_are_refused_unless_the_caller_says(written, tmp_path):
    root = _copy(written[0], tmp_path)
    _edit_info(root, unit=None)
    with pytest.raises(DatasetError, match="does not record joint units"):
        LeRobotDatasetReader(root)
    assert LeRobotDatasetReader(root, units="rad")[0].state.shape == (6,)


def test_normalised_ranges_map_onto_the_joint_limits():
    values = np.array([[-100, 0, 100, -100, 100, 0], [0, 0, 0, 0, 0, 100]], dtype=float)
    rad = to_radians(values, "range_m100_100")
    assert rad[0, 0] == pytest.approx(SO100_JOINTS[0].lower) and rad[0, 2] == pytest.approx(SO100_JOINTS[2].upper)
    assert rad[0, 5] == pytest.approx(SO100_JOINTS[5].lower) and rad[1, 5] == pytest.approx(SO100_JOINTS[5].upper)


def test_joint_order_is_taken_from_the_names(written, tmp_path):
    root = _copy(written[0], tmp_path)
    info = json.loads((root / "meta/info.json").read_text())
    names = info["features"]["observation.state"]["names"]
    info["features"]["observation.state"]["names"] = names[::-1]
    (root / "meta/info.json").write_text(json.dumps(info))
    ds = LeRobotDatasetReader(root)
    np.testing.assert_array_equal(ds[0].state, written[1][0][0][0][0][::-1])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("drop_column", "missing columns"),
        ("old_version", "only LeRobot v3.0"),
        ("drop_video", "missing"),
        ("short_video", "missing frames"),
        ("no_info", "no meta/info.json"),
    ],
)
def test_broken_datasets_get_clear_errors(written, tmp_path, damage, message):
    root = _copy(written[0], tmp_path)
    video = root / "videos/observation.images.scene/chunk-000/file-000.mp4"
    if damage == "drop_column":
        table = pq.read_table(root / "data/chunk-000/file-000.parquet")
        pq.write_table(table.drop_columns(["action"]), root / "data/chunk-000/file-000.parquet")
    elif damage == "old_version":
        _edit_info(root, codebase_version="v2.1")
    elif damage == "drop_video":
        video.unlink()
    elif damage == "short_video":
        import av

        with av.open(str(video)) as src:
            frames = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)][:10]
        with LeRobotDatasetWriter(tmp_path / "short", 30, {"scene": (H, W)}, vcodec="libx264") as w:
            for f in frames:
                w.add_frame(np.zeros(6), np.zeros(6), {"scene": f}, "x")
            w.save_episode()
        shutil.copy(tmp_path / "short/videos/observation.images.scene/chunk-000/file-000.mp4", video)
    elif damage == "no_info":
        (root / "meta/info.json").unlink()
    with pytest.raises(DatasetError, match=message):
        ds = LeRobotDatasetReader(root)
        ds[0]


def test_writer_rejects_bad_frames(tmp_path):
    writer = LeRobotDatasetWriter(tmp_path / "w", 30, {"scene": (H, W)}, vcodec="libx264")
    image = {"scene": np.zeros((H, W, 3), np.uint8)}
    with pytest.raises(DatasetError, match="6 values"):
        writer.add_frame(np.zeros(5), np.zeros(6), image, "t")
    with pytest.raises(DatasetError, match="finite"):
        writer.add_frame([math.nan] * 6, np.zeros(6), image, "t")
    with pytest.raises(DatasetError, match="expected uint8"):
        writer.add_frame(np.zeros(6), np.zeros(6), {"scene": np.zeros((H, W + 1, 3), np.uint8)}, "t")
    with pytest.raises(DatasetError, match="no frames"):
        writer.save_episode()
    with pytest.raises(DatasetError, match="no episode was saved"):
        writer.close()
    assert not (tmp_path / "w/meta/info.json").exists()


def test_record_cli_writes_expert_demonstrations(tmp_path):
    out = tmp_path / "rec"
    code = record.main(
        [
            "--episodes",
            "2",
            "--out",
            str(out),
            "--seed",
            "0",
            "--tasks",
            "pick",
            "--cameras",
            "scene",
            "--size",
            "64",
            "64",
            "--vcodec",
            "libx264",
            "--no-progress",
        ]
    )
    assert code == 0
    ds = LeRobotDatasetReader(out, chunk_size=10)
    assert len(np.unique(ds.episode_index)) == 2
    sample = ds[0]
    assert sample.images["scene"].shape == (64, 64, 3) and sample.task.startswith("pick up the")
    # The recorded action is what the expert sent: the next state moves toward it.
    assert np.abs(ds.state[-1] - ds.state[0]).max() > 0.3
    # The environment state leads with the named cube: the one that ends lifted.
    first_episode = ds.episode_index == 0
    named = ds.environment_state[first_episode][:, :3]
    others = ds.environment_state[first_episode][:, 3:].reshape(-1, 2, 3)
    assert named[-1, 2] > 0.04 and np.all(others[-1, :, 2] < 0.02)


def test_environment_states_round_trip_and_are_optional(written, tmp_path):
    root = tmp_path / "env"
    states, actions, images = _frames(5, 2)
    env = np.arange(15, dtype=np.float32).reshape(5, 3) / 10
    with LeRobotDatasetWriter(root, 30, {"scene": (H, W)}, vcodec="libx264", environment_state_dim=3) as writer:
        with pytest.raises(DatasetError, match="environment_state must be 3"):
            writer.add_frame(states[0], actions[0], {"scene": images[0]}, "t")  # the writer expects one per frame
        for i in range(5):
            writer.add_frame(states[i], actions[i], {"scene": images[i]}, "t", env[i])
        writer.save_episode()
    ds = LeRobotDatasetReader(root)
    np.testing.assert_array_equal(ds.environment_state, env)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["features"][ENV_STATE]["shape"] == [3]
    assert json.loads((root / "meta/stats.json").read_text())[ENV_STATE]["max"] == pytest.approx([1.2, 1.3, 1.4])
    assert LeRobotDatasetReader(written[0]).environment_state is None  # a dataset without: no such feature
    plain = LeRobotDatasetWriter(tmp_path / "plain", 30, {"scene": (H, W)}, vcodec="libx264")
    with pytest.raises(DatasetError, match="environment_state must be 0"):
        plain.add_frame(states[0], actions[0], {"scene": images[0]}, "t", env[0])


def test_record_cli_hides_deliberate_misses_on_request(tmp_path):
    """--retry-share 1 --hide-misses: every episode opens on the empty jaws lifting after the miss (jaws shut, arm
    low), not on the arm's start pose aiming beside the cube."""
    out = tmp_path / "hidden"
    base = ["--episodes", "1", "--out", str(out), "--cameras", "scene", "--size", "32", "32", "--vcodec", "libx264"]
    assert record.main([*base, "--retry-share", "1", "--hide-misses", "--no-progress"]) == 0
    ds = LeRobotDatasetReader(out, chunk_size=4)
    closed = SO100_JOINTS[5].lower
    assert ds.action[0][5] == pytest.approx(closed) and ds.action[-1][5] == pytest.approx(closed)
    assert ds.state[0][5] < closed + 0.35  # recorded from inside the miss: the jaws are already (nearly) shut
    assert np.any(ds.action[:, 5] > closed + 0.5)  # ...and they re-open before the real grasp


def test_record_cli_rejects_bad_arguments(tmp_path):
    assert record.main(["--episodes", "0", "--out", str(tmp_path / "x")]) == 2
    assert record.main(["--episodes", "1", "--out", str(tmp_path / "y"), "--cameras", "nope"]) == 2
    assert record.main(["--episodes", "1", "--out", str(tmp_path / "z"), "--retry-share", "2"]) == 2
    assert record.main(["--episodes", "1", "--out", str(tmp_path / "n"), "--action-noise", "-1"]) == 2
