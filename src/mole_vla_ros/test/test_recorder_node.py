"""RecorderNode over real DDS: start / discard / stop, values equal to what was published, the bag converter agrees,
and kill -9 mid-episode leaves a dataset that loads.

One recorder process records, in order: a discarded episode, a saved one, and one killed with SIGKILL halfway.
"""

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy

from mole_vla_ros.data.bag2lerobot import main as bag2lerobot
from mole_vla_ros.data.bag2lerobot import write_bag
from mole_vla_ros.data.lerobot_dataset import LeRobotDatasetReader
from so100_driver.testing.ros_harness import NodeProcess

sys.path.insert(0, str(Path(__file__).parent))  # pytest runs with --import-mode=importlib: no test dir on the path
from test_recorder_common import FPS, TOPICS, RecorderProbe, bag_records, expected_frames, image, streams

pytestmark = pytest.mark.dds

TASK = "wave at the camera"


class Probe(RecorderProbe):
    def __init__(self) -> None:
        super().__init__("recorder_probe")

    def received(self, samples) -> bool:
        counts = {s: sum(1 for x in samples if x.stream == s) for s in TOPICS}
        latest = self.latest()
        return latest.get("state") == "recording" and latest.get("received") == counts


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec") / "ds"
    args = ["--ros-args", "-p", f"root:={root}", "-p", f"fps:={FPS}", "-p", f"task:={TASK}"]
    # No stall stop here (the probe pauses between episodes while recording); test_recorder_faults covers it.
    args += ["-p", "latency:=1.0", "-p", "status_rate:=20.0", "-p", "stall_timeout:=60.0"]
    out: dict = {"root": root}
    with NodeProcess("mole_vla_ros.nodes.recorder_node", args) as proc, rclpy.init():
        probe = Probe()
        probe.spin_until(lambda: all(c.service_is_ready() for c in probe.clients.values()), 60.0, "recorder services")
        probe.spin_until(
            lambda: all(p.get_subscription_count() for p in probe.pubs.values()), 60.0, "recorder subscriptions"
        )
        out["no_image"] = probe.call("start")

        def start():
            # An image before the episode tells the recorder the camera's size.
            warm_up = next(s for s in streams(time.time(), 0.1) if s.stream == "scene")
            probe.pubs["scene"].publish(warm_up.msg)
            return probe.call("start").success

        probe.spin_until(start, 20.0, f"start\n{proc.tail()}")
        out["discard"] = probe.call("discard")
        out["stop_idle"] = probe.call("stop")

        assert probe.call("start").success, proc.tail()
        out["samples"] = samples = streams(time.time() + 0.2, 1.5)
        probe.play(samples)
        probe.spin_until(lambda: probe.received(samples), 30.0, f"all samples at the recorder\n{proc.tail()}")
        out["status_recording"] = probe.status[-1]
        out["stop"] = probe.call("stop")
        probe.spin_until(lambda: probe.status[-1]["episodes_saved"] == 1, 5.0, "status after the save")
        out["status_idle"] = probe.status[-1]

        # A third episode, killed mid-way: the dataset must still load with episode 0 alone.
        assert probe.call("start").success, proc.tail()
        probe.play(streams(time.time() + 0.2, 0.8))
        probe.spin_until(lambda: probe.status[-1].get("frames", 0) >= 5, 30.0, f"frames\n{proc.tail()}")
        out["partial_files"] = sorted(p.name for p in (root / ".partial").iterdir())
        proc.kill()
        out["log"] = proc.tail(200)
        probe.node.destroy_node()
    return out


def test_start_stop_discard_answer_clearly(session):
    assert not session["no_image"].success and "no image yet on camera/scene/image_raw" in session["no_image"].message
    assert session["discard"].success and session["discard"].message == "episode discarded"
    assert not session["stop_idle"].success and session["stop_idle"].message == "not recording"
    stop = session["stop"]
    assert stop.success and stop.message.startswith("saved episode 0: 22 frames, 0 dropped"), stop.message
    recording, idle = session["status_recording"], session["status_idle"]
    assert (
        recording["episode"] == 0
        and recording["task"] == TASK
        and recording["late"]
        == {
            "scene": 0,
            "state": 0,
            "action": 0,
        }
    )
    assert idle["episodes_saved"] == 1 and idle["frames"] == 22 and idle["fps_achieved"] == pytest.approx(FPS)


def test_the_recording_holds_exactly_what_was_published(session):
    expected = expected_frames(session["samples"])
    ds = LeRobotDatasetReader(session["root"])
    assert sorted(ds.episodes) == [0] and len(ds) == len(expected["image"]) == 22
    np.testing.assert_array_equal(ds.state, expected["state"])
    np.testing.assert_array_equal(ds.action, expected["action"])
    frames = ds.frames("scene")
    for k, i in enumerate(expected["image"]):
        assert np.abs(frames[k].astype(int) - image(i)).mean() < 3, k
    assert ds.task_of(0) == TASK and ds.info["features"]["action"]["unit"] == "rad"


def test_kill_9_mid_episode_leaves_the_saved_episodes_loadable(session):
    assert any(name.endswith(".mp4") for name in session["partial_files"])  # the killed episode had frames
    ds = LeRobotDatasetReader(session["root"])
    assert sorted(ds.episodes) == [0] and len(ds) == 22 and ds.info["total_episodes"] == 1
    assert ds.frames("scene").shape == (22, 48, 64, 3)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_bag_of_the_same_messages_converts_to_the_same_dataset(session, tmp_path, storage):
    write_bag(tmp_path / "bag", bag_records(session["samples"]), storage)
    out = tmp_path / "from_bag"
    assert bag2lerobot([str(tmp_path / "bag"), "--out", str(out), "--fps", str(FPS), "--task", TASK]) == 0
    live, bag = LeRobotDatasetReader(session["root"]), LeRobotDatasetReader(out)
    assert len(live) == len(bag)
    for key in ("state", "action", "timestamp", "frame_index", "episode_index", "task_index"):
        np.testing.assert_array_equal(getattr(bag, key), getattr(live, key), err_msg=key)
    assert bag.tasks == live.tasks
    assert np.abs(bag.frames("scene").astype(int) - live.frames("scene")).mean() < 1


def test_the_keyboard_helper_calls_the_services(tmp_path):
    import subprocess

    args = ["--ros-args", "-p", f"root:={tmp_path / 'ds'}", "-p", f"task:={TASK}"]
    with NodeProcess("mole_vla_ros.nodes.recorder_node", args) as proc:
        # Keys from a pipe: start (refused: no camera yet), discard (refused: not recording), quit.
        done = subprocess.run(
            [sys.executable, "-m", "mole_vla_ros.tools.record_keys", "--wait", "30"],
            input="sdq",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr + proc.tail()
    assert "[start] refused: no image yet on camera/scene/image_raw" in done.stdout, done.stdout
    assert "[discard] refused: not recording (saved episodes are final)" in done.stdout, done.stdout
