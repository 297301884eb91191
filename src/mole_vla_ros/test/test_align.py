"""FrameAligner: frames at a fixed fps from the latest fresh sample of each stream; gaps dropped and counted."""

import math

import numpy as np
import pytest

from mole_vla_ros.data.align import FrameAligner
from mole_vla_ros.decode import image_rgb, joint_positions, stamp_seconds


def _aligner(**kw):
    args = {"streams": ("cam", "state", "action"), "reference": "cam", "fps": 10.0, "max_age": 0.15} | kw
    return FrameAligner(**args)


def _feed(al, stream, stamps):
    for t in stamps:
        al.add(stream, t, (stream, round(t, 6)))


def test_each_frame_takes_the_latest_sample_at_or_before_its_time():
    al = _aligner()
    al.begin(start=1.0)
    _feed(al, "cam", [0.95, 1.02, 1.12, 1.22, 1.32])  # 0.95 is before the start: frame 0 is at 1.02
    _feed(al, "state", [1.0 + 0.025 * i for i in range(16)])
    _feed(al, "action", [1.01, 1.11, 1.21, 1.31])
    frames = al.end()
    assert [round(f.time, 6) for f in frames] == [1.02, 1.12, 1.22, 1.32]
    assert [f.values["cam"][1] for f in frames] == [1.02, 1.12, 1.22, 1.32]
    assert [f.values["state"][1] for f in frames] == [1.0, 1.1, 1.2, 1.3]
    assert [f.values["action"][1] for f in frames] == [1.01, 1.11, 1.21, 1.31]
    assert al.stats.frames == 4 and al.stats.dropped == 0


def test_stale_and_missing_samples_drop_the_frame_and_are_counted():
    al = _aligner()
    al.begin(start=0.0)
    _feed(al, "cam", [1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    _feed(al, "state", [1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    _feed(al, "action", [1.05, 1.12])  # nothing for frame 0, then silent after 1.12
    frames = al.end()
    # frame 1.0: action missing; 1.1 and 1.2 (age 0.08): kept; 1.3 (age 0.18 > 0.15) and later: stale.
    assert [round(f.time, 6) for f in frames] == [1.1, 1.2]
    assert al.stats.dropped == 4 and al.stats.missing["action"] == 1 and al.stats.stale["action"] == 3
    assert al.stats.stale["state"] == 0 and al.stats.frames == 2


def test_a_stalled_camera_decides_nothing_until_it_returns_then_counts_the_gap():
    al = _aligner()
    al.begin(start=0.0)
    _feed(al, "state", np.arange(0.0, 2.0, 0.02))
    _feed(al, "action", np.arange(0.0, 2.0, 0.02))
    _feed(al, "cam", [0.0, 0.1, 0.2])
    assert len(al.poll(until=5.0)) == 3
    assert al.poll(until=5.0) == []  # the camera is silent: no frame is invented past its last image
    _feed(al, "cam", [1.0])  # back after 0.8 s
    frames = al.poll(until=5.0)
    # 0.3 still takes the 0.2 image (0.1 s old); 0.4 .. 0.9 only had a stale one.
    assert [round(f.time, 6) for f in frames] == [0.3, 1.0]
    assert al.stats.stale["cam"] == 6 and al.stats.dropped == 6


def test_live_polling_waits_for_latency_and_counts_late_samples():
    al = _aligner()
    al.begin(start=0.0)
    _feed(al, "cam", [0.0, 0.1])
    _feed(al, "state", [0.0, 0.1])
    _feed(al, "action", [0.0])
    assert [f.time for f in al.poll(until=0.05)] == [0.0]  # 0.1 not yet past now - latency
    assert [f.values["action"][1] for f in al.poll(until=0.2)] == [0.0]  # 0.1 s old: fresh enough ...
    al.add("action", 0.1, "late")  # ... but this one came after its frame was decided
    assert al.stats.late["action"] == 1


def test_tolerance_accepts_jittered_stamps_as_the_frame_s_own():
    al = _aligner(tolerance=0.005)
    al.begin(start=0.0)
    _feed(al, "cam", [0.0, 0.1025, 0.199])
    _feed(al, "state", [0.0, 0.103, 0.2])
    _feed(al, "action", [0.0, 0.1, 0.2])
    frames = al.end()
    assert [f.values["cam"][1] for f in frames] == [0.0, 0.1025, 0.199]
    assert [f.values["state"][1] for f in frames] == [0.0, 0.103, 0.2]


def test_end_stops_at_the_last_reference_sample_before_stop_and_history_is_bounded():
    al = _aligner()
    _feed(al, "cam", np.arange(0.0, 10.0, 0.1))  # idle: only ~max_age + history seconds are kept
    assert len(al._stamps["cam"]) < 15
    al.begin(start=10.0)
    _feed(al, "cam", np.arange(10.0, 11.0, 0.1))
    _feed(al, "state", np.arange(10.0, 11.0, 0.1))
    _feed(al, "action", np.arange(10.0, 11.0, 0.1))
    frames = al.end(stop=10.45)
    assert [round(f.time, 6) for f in frames] == [10.0, 10.1, 10.2, 10.3, 10.4]
    assert not al.running and al.end() == []


def test_a_new_episode_restarts_counts_and_frame_times():
    al = _aligner()
    for start in (0.0, 5.0):
        al.begin(start)
        for stream in al.streams:
            _feed(al, stream, [start + 0.1, start + 0.2])
        frames = al.end()
        assert [round(f.time - start, 6) for f in frames] == [0.1, 0.2] and al.stats.frames == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reference": "nope"}, "reference stream"),
        ({"fps": 0.0}, "fps"),
        ({"max_age": 0.0}, "max_age"),
        ({"tolerance": 0.2}, "tolerance"),
        ({"streams": ("cam", "cam")}, "distinct"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _aligner(**kwargs)


def test_bad_samples_are_refused():
    al = _aligner()
    with pytest.raises(ValueError, match="unknown stream"):
        al.add("depth", 0.0, None)
    with pytest.raises(ValueError, match="not finite"):
        al.add("cam", math.nan, None)


class _Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_message_decoding_orders_joints_and_converts_colours():
    header = _Obj(stamp=_Obj(sec=3, nanosec=500_000_000))
    assert stamp_seconds(header) == 3.5
    assert stamp_seconds(_Obj(stamp=_Obj(sec=0, nanosec=0))) is None
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 255
    padded = np.zeros((2, 10), np.uint8)  # step 10 > 3 * 3: padding is removed
    padded[:, :9] = bgr.reshape(2, 9)
    rgb = image_rgb(_Obj(encoding="bgr8", height=2, width=3, step=10, data=padded.tobytes()))
    assert rgb.shape == (2, 3, 3) and (rgb[..., 2] == 255).all() and (rgb[..., 0] == 0).all()
    with pytest.raises(ValueError, match=r"expected step\*height"):
        image_rgb(_Obj(encoding="rgb8", height=2, width=3, step=9, data=b"\0" * 10))
    with pytest.raises(ValueError, match="unsupported"):
        image_rgb(_Obj(encoding="16UC1", height=2, width=3, step=6, data=b"\0" * 12))
    msg = _Obj(name=["b", "a"], position=[2.0, 1.0])
    np.testing.assert_array_equal(joint_positions(msg, ("a", "b")), [1.0, 2.0])
    with pytest.raises(ValueError, match="lacks joints"):
        joint_positions(msg, ("a", "c"))
