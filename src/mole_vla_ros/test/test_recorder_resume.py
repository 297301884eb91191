"""LeRobotDatasetWriter(append=True): a second session extends a dataset; a dataset of other features is refused."""

import json

import numpy as np
import pytest

from mole_vla_ros.data.lerobot_dataset import DatasetError, LeRobotDatasetReader, LeRobotDatasetWriter
from so100_driver.joints import JOINT_NAMES

SIZE = (24, 32)


def record(root, episodes, task, first=0, fps=10, cameras=None, **kwargs):
    cameras = cameras or {"scene": SIZE}
    writer = LeRobotDatasetWriter(
        root, fps=fps, cameras=cameras, vcodec="libx264", commit_each_episode=True, append=True, **kwargs
    )
    for ep in range(episodes):
        for k in range(5 + ep):
            value = np.full(6, 0.01 * (first + ep) + 0.001 * k)
            images = {name: np.full((*size, 3), 40 * (first + ep) + 5 * k, np.uint8) for name, size in cameras.items()}
            writer.add_frame(value, -value, images, task)
        writer.save_episode()
    writer.close()
    return writer


def test_a_second_session_appends_episodes_after_the_first(tmp_path):
    root = tmp_path / "ds"
    first = record(root, 2, "pick")
    assert first.resumed_episodes == 0
    (root / ".partial").mkdir()  # an episode killed mid-way in between
    (root / ".partial" / "observation.images.scene.mp4").write_bytes(b"half")
    second = record(root, 1, "place", first=2)
    assert second.resumed_episodes == 2 and not (root / ".partial").exists()

    ds = LeRobotDatasetReader(root)
    assert sorted(ds.episodes) == [0, 1, 2] and ds.info["total_episodes"] == 3
    assert len(ds) == 5 + 6 + 5 == ds.info["total_frames"]
    np.testing.assert_array_equal(ds.index, np.arange(len(ds)))
    np.testing.assert_array_equal(ds.episode_index, [0] * 5 + [1] * 6 + [2] * 5)
    np.testing.assert_array_equal(ds.frame_index, [*range(5), *range(6), *range(5)])
    assert [ds.task_of(i) for i in (0, 5, 11)] == ["pick", "pick", "place"] and ds.info["total_tasks"] == 2
    np.testing.assert_allclose(ds.state[11], np.full(6, 0.02), atol=1e-6)
    np.testing.assert_allclose(ds.action[15], -np.full(6, 0.024), atol=1e-6)
    frames = ds.frames("scene")  # the third episode's video is its own file, after the first two
    assert abs(int(frames[11].mean()) - 80) <= 2 and abs(int(frames[15].mean()) - 100) <= 2

    stats = json.loads((root / "meta" / "stats.json").read_text())
    assert stats["observation.state"]["count"] == [16] and stats["observation.images.scene"]["count"] == [16]
    assert stats["episode_index"]["max"] == [2.0]
    # Image stats over all 16 frames, the first session's restored from its stats.json.
    mean_pixel = np.mean([40 * ep + 5 * k for ep, n in ((0, 5), (1, 6), (2, 5)) for k in range(n)]) / 255
    assert stats["observation.images.scene"]["mean"][0][0][0] == pytest.approx(mean_pixel, abs=0.01)


def test_episodes_past_the_committed_ones_are_overwritten(tmp_path):
    root = tmp_path / "ds"
    record(root, 2, "pick")
    info = json.loads((root / "meta" / "info.json").read_text())
    info["total_episodes"] = 1  # as if killed after episode 1's files, before its info.json
    (root / "meta" / "info.json").write_text(json.dumps(info))
    record(root, 1, "place", first=5)
    ds = LeRobotDatasetReader(root)
    assert sorted(ds.episodes) == [0, 1] and len(ds) == 10 and ds.task_of(9) == "place"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fps": 15}, "fps 10 in the dataset, 15 here"),
        ({"cameras": {"wrist": SIZE}}, "cameras ['scene'] in the dataset, ['wrist'] here"),
        ({"cameras": {"scene": (48, 64)}}, "camera scene is 32x24 in the dataset, 64x48 here"),
        ({"joint_names": JOINT_NAMES[::-1]}, "observation.state joints"),
    ],
)
def test_a_dataset_of_other_features_is_refused_naming_the_mismatch(tmp_path, change, message):
    root = tmp_path / "ds"
    record(root, 1, "pick")
    before = (root / "meta" / "info.json").read_text()
    with pytest.raises(DatasetError, match="cannot append") as refused:
        record(root, 1, "pick", **change)
    assert message in str(refused.value)
    assert (root / "meta" / "info.json").read_text() == before


def test_another_codec_and_appending_without_commit_are_refused(tmp_path):
    root = tmp_path / "ds"
    record(root, 1, "pick")
    with pytest.raises(DatasetError, match=r"video codec \['h264'\] in the dataset, av1 \(libsvtav1\) here"):
        LeRobotDatasetWriter(root, fps=10, cameras={"scene": SIZE}, commit_each_episode=True, append=True)
    with pytest.raises(DatasetError, match="append needs commit_each_episode"):
        LeRobotDatasetWriter(root, fps=10, cameras={"scene": SIZE}, vcodec="libx264", append=True)
    with pytest.raises(DatasetError, match="already holds a dataset"):
        LeRobotDatasetWriter(root, fps=10, cameras={"scene": SIZE}, vcodec="libx264", commit_each_episode=True)
