"""mole-vla dataset-viz: an episode to an MP4 (cameras over the joint plot) and a PNG summary."""

import json
from pathlib import Path

import av
import numpy as np
import pytest

from mole_vla_ros.data.lerobot_dataset import LeRobotDatasetWriter
from mole_vla_ros.data.visualize import PLOT_HEIGHT, main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("viz") / "ds"
    with LeRobotDatasetWriter(root, 15, {"scene": (48, 64), "wrist": (32, 32)}, vcodec="libx264") as writer:
        for episode, n in enumerate((9, 12)):
            for k in range(n):
                q = np.full(6, 0.1 * k)
                scene = np.full((48, 64, 3), (0, 200, 0) if episode else (200, 0, 0), np.uint8)
                writer.add_frame(q, q + 0.05, {"scene": scene, "wrist": np.zeros((32, 32, 3), np.uint8)}, "t")
            writer.save_episode()
    return root


def test_an_episode_becomes_an_mp4_and_a_png(dataset, tmp_path, capsys):
    assert main([str(dataset), "--episode", "1", "--out", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 12
    with av.open(summary["mp4"]) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 12
    height, width = frames[0].shape[:2]
    # Both cameras at 240 px high side by side (64x48 -> 320, 32x32 -> 240), the plot strip under them.
    assert (height, width) == (240 + PLOT_HEIGHT, 560)
    assert frames[0][100, 100, 1] > 150 and frames[0][100, 100, 0] < 80  # episode 1's green scene view
    strip_first, strip_last = frames[0][240:], frames[-1][240:]
    assert np.abs(strip_first.astype(int) - strip_last).sum() > 0  # the cursor moved
    png = summary["png"]
    assert png.endswith("episode_001.png") and Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unknown_episode_is_a_clear_error(dataset, tmp_path, capsys):
    assert main([str(dataset), "--episode", "7", "--out", str(tmp_path)]) == 1
    assert "no episode 7; it has [0, 1]" in capsys.readouterr().err
    assert main([str(tmp_path / "none"), "--out", str(tmp_path)]) == 1
    assert "no meta/info.json" in capsys.readouterr().err
