"""Instruction checks and the observation buffer's freshness rules, without ROS."""

import numpy as np
import pytest

from mole_vla_ros.execution.observation import ObservationBuffer, StaleObservationError, validate_instruction


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        (" \t\n", "empty"),
        ("a" * 4097, "4097 bytes"),
        ("é" * 2049, "4098 bytes"),  # two bytes each: the limit is in bytes, not characters
        ("pick\x1bup", "control characters"),
        ("bad \udcff bytes", "not valid UTF-8"),
    ],
)
def test_bad_instructions_are_refused(text, match):
    with pytest.raises(ValueError, match=match):
        validate_instruction(text)


def test_good_instructions_are_stripped():
    assert validate_instruction("  pick up the red cube\n") == "pick up the red cube"
    assert validate_instruction("a" * 4096) == "a" * 4096
    assert validate_instruction("prends le cube rouge\tà gauche") == "prends le cube rouge\tà gauche"


def test_snapshot_uses_the_oldest_stamp_and_camera_order():
    buf = ObservationBuffer(("wrist", "top"))
    top, wrist = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)
    buf.update_image("top", top, 10.0)
    buf.update_image("wrist", wrist, 10.1)
    buf.update_state(np.arange(6.0), 10.2)
    obs = buf.snapshot(now=10.3, max_age=0.5)
    assert obs.stamp == 10.0
    assert obs.images[0] is wrist and obs.images[1] is top
    assert obs.state.tolist() == list(range(6))


def test_missing_and_stale_inputs_are_named():
    buf = ObservationBuffer(("cam",))
    with pytest.raises(StaleObservationError, match="no image yet on cam; no joint state yet"):
        buf.snapshot(1.0, 0.5)
    buf.update_image("cam", np.zeros((2, 2, 3), np.uint8), 1.0)
    buf.update_state(np.zeros(6), 2.0)
    with pytest.raises(StaleObservationError, match=r"camera image cam stale for 1\.20 s"):
        buf.snapshot(2.2, 0.5)
    with pytest.raises(KeyError, match="unknown camera"):
        buf.update_image("other", np.zeros((2, 2, 3), np.uint8), 1.0)
    with pytest.raises(ValueError):
        ObservationBuffer(())
