"""The live writer's encoder process: same videos and image stats as encoding in-process; its failure drops the
episode (DatasetError at save) without touching the saved ones."""

import json

import numpy as np
import pytest

from mole_vla_ros.data.lerobot_dataset import DatasetError, LeRobotDatasetReader, LeRobotDatasetWriter
from mole_vla_ros.data.video_encoder import ImageSums

SIZE = (48, 64)


def image(i: int) -> np.ndarray:
    out = np.zeros((*SIZE, 3), np.uint8)
    out[:, : SIZE[1] // 2] = (10 * i, 90, 200)
    out[:, SIZE[1] // 2 :] = (210, 30 + 7 * i, 60)
    return out


def write(root, encoder_process, episodes=(6, 4)):
    writer = LeRobotDatasetWriter(
        root,
        fps=10,
        cameras={"a": SIZE, "b": SIZE},
        vcodec="libx264",
        commit_each_episode=True,
        encoder_process=encoder_process,
    )
    k = 0
    for n in episodes:
        for _ in range(n):
            writer.add_frame(np.full(6, 0.01 * k), np.zeros(6), {"a": image(k), "b": image(k)[::-1].copy()}, "t")
            k += 1
        writer.save_episode()
    return writer


def test_the_encoder_process_writes_what_the_inline_encoder_writes(tmp_path):
    write(tmp_path / "inline", False).close()
    write(tmp_path / "process", True).close()
    inline, process = LeRobotDatasetReader(tmp_path / "inline"), LeRobotDatasetReader(tmp_path / "process")
    assert sorted(process.episodes) == [0, 1] and len(process) == 10
    for camera in ("a", "b"):
        np.testing.assert_array_equal(process.frames(camera), inline.frames(camera))
    for k in range(10):
        assert np.abs(process.frames("a")[k].astype(int) - image(k)).mean() < 3, k
    stats = [json.loads((tmp_path / name / "meta" / "stats.json").read_text()) for name in ("inline", "process")]
    assert stats[0] == stats[1] and stats[1]["observation.images.a"]["count"] == [10]


def test_an_encoder_failure_drops_the_episode_and_keeps_the_saved_ones(tmp_path):
    writer = write(tmp_path / "ds", True, episodes=(5,))
    writer.add_frame(np.zeros(6), np.zeros(6), {"a": image(0), "b": image(1)}, "t")
    writer._encoder._process.kill()  # the worker dies mid-episode
    writer._encoder._process.join(timeout=10)
    with pytest.raises(DatasetError, match="encoder process exited"):
        writer.add_frame(np.zeros(6), np.zeros(6), {"a": image(0), "b": image(1)}, "t")
    with pytest.raises(DatasetError, match=r"episode not saved: .*encoder process exited"):
        writer.save_episode()
    writer.close()
    ds = LeRobotDatasetReader(tmp_path / "ds")
    assert sorted(ds.episodes) == [0] and len(ds) == 5


def test_image_stats_on_a_subsampled_grid_match_the_full_image():
    rng = np.random.default_rng(0)
    big = (rng.random((480, 640, 3)) * np.array([255, 128, 60])).astype(np.uint8)
    sums = ImageSums()
    sums.add(big)
    stats = sums.stats()
    pixels = big.reshape(-1, 3) / 255.0
    np.testing.assert_allclose([m[0][0] for m in stats["mean"]], pixels.mean(0), atol=0.01)
    np.testing.assert_allclose([s[0][0] for s in stats["std"]], pixels.std(0), atol=0.01)
