"""RecorderNode faults over real DDS: a silent stream stops and saves the episode, SIGTERM and SIGINT mid-episode
save or drop it (`on_shutdown`), a restart on the same root appends, and a dataset of another fps is refused.

Session A (on_shutdown: save): episode 0 ends when the action stream goes silent, episode 1 at SIGTERM.
Session B (on_shutdown: discard, same root): episode 2 is stopped by the service, the next one dropped at SIGINT.
"""

import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy

from mole_vla_ros.data.lerobot_dataset import LeRobotDatasetReader
from so100_driver.testing.ros_harness import NodeProcess

sys.path.insert(0, str(Path(__file__).parent))  # pytest runs with --import-mode=importlib: no test dir on the path
from test_recorder_common import FPS, RecorderProbe, streams

pytestmark = pytest.mark.dds

TASK = "stack the cubes"
STALL = 1.5


class Probe(RecorderProbe):
    def __init__(self, name: str) -> None:
        super().__init__(name, services=("start", "stop"))

    def ready(self, proc: NodeProcess) -> None:
        self.spin_until(lambda: all(c.service_is_ready() for c in self.clients.values()), 60.0, proc.tail())
        self.spin_until(lambda: all(p.get_subscription_count() for p in self.pubs.values()), 60.0, proc.tail())

    def start(self, proc: NodeProcess) -> None:
        def attempt():
            warm_up = next(s for s in streams(time.time(), 0.1) if s.stream == "scene")  # tells the image size
            self.pubs["scene"].publish(warm_up.msg)
            return self.call("start").success

        self.spin_until(attempt, 30.0, f"start\n{proc.tail()}")
        self.status.clear()  # what follows is this episode's
        self.spin_until(lambda: self.latest().get("state") == "recording", 10.0, f"recording\n{proc.tail()}")


def recorder(root: Path, *extra: str) -> NodeProcess:
    args = ["--ros-args", "-p", f"root:={root}", "-p", f"fps:={FPS}", "-p", f"task:={TASK}", "-p", "latency:=0.5"]
    args += ["-p", "status_rate:=20.0", *(a for kv in extra for a in ("-p", kv))]
    return NodeProcess("mole_vla_ros.nodes.recorder_node", args)


def exit_code(proc: NodeProcess, sig: int) -> int:
    proc.proc.send_signal(sig)
    return proc.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults") / "ds"
    out: dict = {"root": root}
    with rclpy.init():
        probe = Probe("recorder_faults_probe")
        with recorder(root, f"stall_timeout:={STALL}", "on_shutdown:=save") as proc:
            probe.ready(proc)
            probe.start(proc)
            samples = streams(time.time() + 0.2, 4.0 + 2 * STALL)
            cut = samples[0].stamp + 1.0  # the action stream goes silent here; camera and joint states go on
            kept = [s for s in samples if s.stream != "action" or s.stamp < cut]
            out["stopped_itself"] = probe.play(kept, until=lambda: probe.latest().get("state") == "idle")
            out["stall_status"] = probe.latest()
            out["silent_seen"] = [s["silent"] for s in probe.status if s.get("silent")]

            probe.start(proc)
            probe.play(streams(time.time() + 0.2, 1.0))
            probe.spin_until(lambda: probe.latest().get("frames", 0) >= 5, 30.0, f"frames\n{proc.tail()}")
            out["sigterm_code"] = exit_code(proc, signal.SIGTERM)
            out["log_a"] = proc.tail(200)

        with recorder(root, "stall_timeout:=60.0", "on_shutdown:=discard") as proc:
            probe.status.clear()
            probe.ready(proc)
            probe.start(proc)
            probe.play(streams(time.time() + 0.2, 1.0))
            probe.spin_until(lambda: probe.latest().get("frames", 0) >= 5, 30.0, f"frames\n{proc.tail()}")
            out["stop_b"] = probe.call("stop")
            probe.start(proc)
            probe.play(streams(time.time() + 0.2, 1.0))
            probe.spin_until(lambda: probe.latest().get("frames", 0) >= 5, 30.0, f"frames\n{proc.tail()}")
            out["partial_files"] = sorted(p.name for p in (root / ".partial").iterdir())
            out["sigint_code"] = exit_code(proc, signal.SIGINT)
            out["log_b"] = proc.tail(200)

        with recorder(root, "fps:=10") as proc:  # the last -p wins: fps 10 against the dataset's 15
            out["mismatch_code"] = proc.proc.wait(timeout=60)
            out["log_c"] = proc.tail(50)
        probe.node.destroy_node()
    return out


def test_a_silent_stream_stops_the_episode_and_saves_it(session):
    assert session["stopped_itself"], session["log_a"]
    status = session["stall_status"]
    stop = status["last_stop"]
    assert stop.startswith(f"stopped: action silent for over {STALL:g} s: saved episode 0:"), stop
    assert status["episodes_saved"] >= 1 and status["frames"] >= 5
    assert all(silent == ["action"] for silent in session["silent_seen"]), session["silent_seen"]
    assert "action silent for over" in session["log_a"]


def test_sigterm_mid_episode_saves_it(session):
    assert session["sigterm_code"] == 0, session["log_a"]
    assert "shutdown while recording: saved episode 1:" in session["log_a"], session["log_a"]


def test_a_restart_on_the_same_root_appends_and_sigint_with_discard_drops(session):
    log = session["log_b"]
    assert "holds 2 episodes: new episodes are appended" in log, log
    assert session["stop_b"].success and session["stop_b"].message.startswith("saved episode 2:")
    assert any(name.endswith(".mp4") for name in session["partial_files"])  # the dropped episode had frames
    assert session["sigint_code"] == 0 and "the running episode is discarded (on_shutdown)" in log, log

    ds = LeRobotDatasetReader(session["root"])
    assert sorted(ds.episodes) == [0, 1, 2] and ds.info["total_episodes"] == 3
    np.testing.assert_array_equal(ds.index, np.arange(len(ds)))
    for ep, row in ds.episodes.items():
        start, end = int(row["dataset_from_index"]), int(row["dataset_to_index"])
        assert end - start >= 5 and set(ds.episode_index[start:end].tolist()) == {ep}
        np.testing.assert_array_equal(ds.frame_index[start:end], np.arange(end - start))
    assert ds.frames("scene").shape == (len(ds), 48, 64, 3)
    assert not (session["root"] / ".partial").exists()


def test_a_dataset_of_another_fps_is_refused_at_start_up(session):
    assert session["mismatch_code"] == 1, session["log_c"]
    assert "fps 15 in the dataset, 10 here" in session["log_c"], session["log_c"]
