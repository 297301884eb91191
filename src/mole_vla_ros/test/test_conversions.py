"""Conversions between ROS messages and numpy: images, joint states, action chunks (no DDS needed)."""

import numpy as np
import pytest
from sensor_msgs.msg import Image, JointState

from mole_vla_ros import conversions as conv
from so100_driver.joints import JOINT_NAMES

ENCODINGS = [("mono8", 1), ("rgb8", 3), ("bgr8", 3), ("rgba8", 4), ("bgra8", 4)]


def _pixels(h, w, c, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


@pytest.mark.parametrize(("encoding", "channels"), ENCODINGS)
def test_image_round_trip_is_exact(encoding, channels):
    array = _pixels(5, 7, channels)
    msg = conv.numpy_to_image(array, encoding, frame_id="cam")
    assert (msg.height, msg.width, msg.step, msg.encoding) == (5, 7, 7 * channels, encoding)
    assert msg.header.frame_id == "cam"
    np.testing.assert_array_equal(conv.image_to_numpy(msg), array)


def test_padded_rows_are_unpadded():
    array = _pixels(3, 4, 3)
    padded = np.zeros((3, 16), dtype=np.uint8)
    padded[:, :12] = array.reshape(3, 12)
    padded[:, 12:] = 99  # padding bytes must not leak into pixels
    msg = Image(height=3, width=4, encoding="rgb8", step=16, data=padded.tobytes())
    np.testing.assert_array_equal(conv.image_to_numpy(msg), array)


@pytest.mark.parametrize(
    ("height", "width", "encoding", "step", "nbytes", "match"),
    [
        (2, 2, "rgb16", 12, 24, "unsupported image encoding"),
        (2, 2, "32FC1", 8, 16, "unsupported image encoding"),
        (2, 2, "rgb8", 5, 24, "step 5 is smaller"),
        (2, 2, "rgb8", 6, 11, "11 bytes"),
        (0, 2, "mono8", 2, 0, "no pixels"),
    ],
)
def test_bad_images_raise_clear_errors(height, width, encoding, step, nbytes, match):
    msg = Image(height=height, width=width, encoding=encoding, step=step, data=bytes(nbytes))
    with pytest.raises(ValueError, match=match):
        conv.image_to_numpy(msg)


def test_numpy_to_image_refuses_mismatched_arrays():
    with pytest.raises(ValueError, match="does not fit"):
        conv.numpy_to_image(_pixels(2, 2, 3), "mono8")
    with pytest.raises(ValueError, match="uint8"):
        conv.numpy_to_image(np.zeros((2, 2, 3), dtype=np.float32), "rgb8")


@pytest.mark.parametrize(("encoding", "channels"), ENCODINGS)
def test_to_rgb_gives_rgb_order(encoding, channels):
    rgb = np.array([[[10, 20, 30]]], dtype=np.uint8)
    source = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, [[[255]]]], axis=2).astype(np.uint8),
        "bgra8": np.concatenate([rgb[..., ::-1], [[[255]]]], axis=2).astype(np.uint8),
        "mono8": np.array([[[20]]], dtype=np.uint8),
    }[encoding]
    out = conv.to_rgb(source, encoding)
    expected = [20, 20, 20] if encoding == "mono8" else [10, 20, 30]
    assert out.shape == (1, 1, 3)
    assert out[0, 0].tolist() == expected


def test_rgb_to_tensor_layout_and_range():
    rgb = _pixels(4, 6, 3)
    tensor = conv.rgb_to_tensor(rgb)
    assert tuple(tensor.shape) == (1, 3, 4, 6)
    assert float(tensor[0, 2, 1, 3]) == pytest.approx(rgb[1, 3, 2] / 255.0)
    with pytest.raises(ValueError, match="RGB"):
        conv.rgb_to_tensor(_pixels(4, 6, 1))


def test_joint_state_is_reordered_by_the_table():
    shuffled = list(reversed(JOINT_NAMES))
    msg = JointState(name=shuffled, position=[float(i) for i in range(6)])
    positions = conv.joint_state_to_positions(msg)
    assert positions.tolist() == [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]


@pytest.mark.parametrize(
    ("names", "values", "match"),
    [
        ([*JOINT_NAMES[:5], "jaw"], [0.0] * 6, "unknown joints \\['jaw'\\]"),
        (list(JOINT_NAMES[:5]), [0.0] * 5, "lacks joints \\['gripper'\\]"),
        (list(JOINT_NAMES), [0.0] * 5, "6 names but 5 positions"),
        (list(JOINT_NAMES), [0.0] * 5 + [float("nan")], "non-finite"),
    ],
)
def test_bad_joint_states_raise(names, values, match):
    with pytest.raises(ValueError, match=match):
        conv.joint_state_to_positions(JointState(name=names, position=values))


def test_positions_to_joint_state_round_trip():
    values = np.linspace(-0.5, 0.5, 6)
    msg = conv.positions_to_joint_state(values)
    np.testing.assert_array_equal(conv.joint_state_to_positions(msg), values)
    with pytest.raises(ValueError, match="expected 6"):
        conv.positions_to_joint_state(np.zeros(5))


def test_action_chunk_times_and_round_trip():
    positions = np.random.default_rng(1).uniform(-0.5, 0.5, (8, 6))
    stamp = conv.seconds_to_stamp(1234.5)
    msg = conv.build_action_chunk(positions, stamp, fps=20.0, chunk_id=3, instruction="pick", num_layers=4)
    assert msg.header.stamp == stamp and msg.trajectory.header.stamp == stamp
    times = [conv.duration_to_seconds(p.time_from_start) for p in msg.trajectory.points]
    np.testing.assert_allclose(times, [(i + 1) / 20.0 for i in range(8)])
    parsed = conv.parse_action_chunk(msg)
    assert parsed.stamp == pytest.approx(1234.5)
    assert (parsed.chunk_id, parsed.instruction) == (3, "pick")
    np.testing.assert_array_equal(parsed.positions, positions)


def test_parse_reorders_columns_and_rejects_bad_names():
    positions = np.arange(12, dtype=float).reshape(2, 6)
    msg = conv.build_action_chunk(positions, conv.seconds_to_stamp(1.0), fps=10.0)
    msg.trajectory.joint_names = list(reversed(JOINT_NAMES))
    np.testing.assert_array_equal(conv.parse_action_chunk(msg).positions, positions[:, ::-1])
    msg.trajectory.joint_names = [*JOINT_NAMES[:5], "jaw"]
    with pytest.raises(ValueError, match="do not match"):
        conv.parse_action_chunk(msg)


def test_build_chunk_rejects_bad_input():
    with pytest.raises(ValueError, match="must be"):
        conv.build_action_chunk(np.zeros((3, 5)), conv.seconds_to_stamp(0.0), fps=10.0)
    with pytest.raises(ValueError, match="fps"):
        conv.build_action_chunk(np.zeros((3, 6)), conv.seconds_to_stamp(0.0), fps=0.0)


def test_stamp_conversions():
    assert conv.stamp_to_seconds(conv.seconds_to_stamp(12.000000001)) == pytest.approx(12.000000001)
    with pytest.raises(ValueError):
        conv.seconds_to_stamp(float("nan"))
    assert conv.duration_to_seconds(conv.seconds_to_duration(0.02)) == pytest.approx(0.02)


def test_joint_trajectory_builder():
    msg = conv.build_joint_trajectory(np.zeros((2, 6)), [0.02, 0.04], conv.seconds_to_stamp(5.0), JOINT_NAMES)
    assert [conv.duration_to_seconds(p.time_from_start) for p in msg.points] == pytest.approx([0.02, 0.04])
    with pytest.raises(ValueError):
        conv.build_joint_trajectory(np.zeros((2, 6)), [0.02], conv.seconds_to_stamp(5.0), JOINT_NAMES)
