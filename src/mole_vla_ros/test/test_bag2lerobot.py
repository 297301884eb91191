"""mole-vla bag2lerobot: MCAP and sqlite3 bags convert to the aligned dataset; bad bags get clear errors, no files."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))  # pytest runs with --import-mode=importlib: no test dir on the path
from test_recorder_common import FPS, TOPICS, TYPES, bag_records, expected_frames, image, streams

from mole_vla_ros.data.bag2lerobot import main, write_bag
from mole_vla_ros.data.lerobot_dataset import LeRobotDatasetReader

ARGS = ["--fps", str(FPS), "--task", "wave at the camera"]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_bag_converts_to_the_aligned_frames(tmp_path, storage, capsys):
    samples = streams(100.0, 1.5)
    write_bag(tmp_path / "bag", bag_records(samples), storage)
    out = tmp_path / "ds"
    assert main([str(tmp_path / "bag"), "--out", str(out), *ARGS]) == 0
    summary = json.loads(capsys.readouterr().out)
    expected = expected_frames(samples)
    ds = LeRobotDatasetReader(out)
    assert len(ds) == len(expected["image"]) == summary["frames"] == 22
    np.testing.assert_array_equal(ds.state, expected["state"])
    np.testing.assert_array_equal(ds.action, expected["action"])
    np.testing.assert_allclose(ds.timestamp, np.arange(len(ds)) / FPS, atol=1e-6)
    frames = ds.frames("scene")
    for k, i in enumerate(expected["image"]):
        assert np.abs(frames[k].astype(int) - image(i)).mean() < 3, k
    assert ds.task_of(0) == "wave at the camera"
    assert summary["episodes"][0]["dropped"] == 0 and summary["frames_per_second"] > 0


def test_several_bags_are_several_episodes_and_yaml_sets_the_topics(tmp_path):
    renamed = {"scene": "/top/image", "state": "/follower/joint_states", "action": "/joint_command"}
    for n in range(2):
        records = [
            (renamed[s], TYPES[s], t, d)
            for s in TOPICS
            for (topic, _m, t, d) in bag_records(streams(1.0 + 10.0 * n, 0.6))
            if topic == TOPICS[s]
        ]
        write_bag(tmp_path / f"bag{n}", sorted(records, key=lambda r: r[2]))
    config = tmp_path / "topics.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cameras": {"top": renamed["scene"]},
                "joint_states": renamed["state"],
                "action": renamed["action"],
                "fps": FPS,
                "task": "stack",
            }
        )
    )
    out = tmp_path / "ds"
    assert main([str(tmp_path / "bag0"), str(tmp_path / "bag1"), "--out", str(out), "--config", str(config)]) == 0
    ds = LeRobotDatasetReader(out)
    assert ds.cameras == ["top"] and sorted(ds.episodes) == [0, 1] and len(ds) == 18


@pytest.mark.parametrize(
    ("drop", "empty", "message"),
    [
        ("action", None, "topic /leader/joint_states (action) is not in the bag"),
        (None, "state", "topic /joint_states (state) has no messages"),
    ],
)
def test_a_missing_or_empty_topic_is_a_clear_error_and_nothing_is_written(tmp_path, capsys, drop, empty, message):
    records = [r for r in bag_records(streams(1.0, 0.5)) if r[0] != TOPICS.get(drop)]
    if empty:  # the topic is declared (a connection) but never written
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        store = get_typestore(Stores.ROS2_KILTED)
        with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as w:
            conns = {t: w.add_connection(t, TYPES[s], typestore=store) for s, t in TOPICS.items()}
            for topic, _m, t, data in records:
                if topic != TOPICS[empty]:
                    w.write(conns[topic], t, data)
    else:
        write_bag(tmp_path / "bag", records)
    out = tmp_path / "ds"
    assert main([str(tmp_path / "bag"), "--out", str(out), *ARGS]) == 1
    err = capsys.readouterr().err
    assert message in err and "nothing written" in err and "The bag has:" in err
    assert not out.exists() and not list(tmp_path.glob(".ds*"))


def test_bad_arguments_are_refused_before_reading(tmp_path, capsys):
    write_bag(tmp_path / "bag", bag_records(streams(1.0, 0.3)))
    assert main([str(tmp_path / "bag"), "--out", str(tmp_path / "a"), "--fps", "15"]) == 1
    assert "no task text" in capsys.readouterr().err
    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "b"), *ARGS]) == 1
    assert "no such bag" in capsys.readouterr().err
    assert main([str(tmp_path / "bag"), "--out", str(tmp_path / "c"), "--camera", "scene", *ARGS]) == 1
    assert "NAME=TOPIC" in capsys.readouterr().err
    config = tmp_path / "bad.yaml"
    config.write_text("camera: /x\n")
    assert main([str(tmp_path / "bag"), "--out", str(tmp_path / "d"), "--config", str(config), *ARGS]) == 1
    assert "unknown keys ['camera']" in capsys.readouterr().err
    assert not any((tmp_path / d).exists() for d in "abcd")
