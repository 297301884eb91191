"""The async chunk queue without ROS: stale drop, blending, threshold, dry hold, sync mode, bad chunks."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mole_vla_ros.execution.chunk_queue import (
    BlendMode,
    ChunkQueue,
    ExecutionMode,
    QueueConfig,
    clamp_near_limits,
    rate_limited,
)
from so100_driver.joints import joints_for

FPS = 10.0


def _offsets(h):
    return np.arange(1, h + 1) / FPS


def _chunk(h, value=0.0):
    return np.full((h, 6), value)


def _ramp(h, start=0.0, step=0.01):
    return np.repeat((start + step * np.arange(h))[:, None], 6, axis=1)


def test_first_chunk_actions_come_out_at_their_times():
    q = ChunkQueue()
    result = q.push(stamp=100.0, offsets=_offsets(4), positions=_ramp(4), now=100.0)
    assert result.accepted and result.queued == 4 and result.dropped_stale == 0
    # At 100.05 the next target is the action due at 100.1 (index 0), at 100.15 the one due at 100.2.
    assert q.pop(100.05).positions[0] == pytest.approx(0.0)
    tick = q.pop(100.15)
    assert tick.positions[0] == pytest.approx(0.01) and tick.target_time == pytest.approx(100.2)
    assert not tick.holding


def test_stale_actions_are_dropped_so_time_never_goes_backwards():
    q = ChunkQueue(QueueConfig(blend_mode=BlendMode.REPLACE))
    q.push(stamp=100.0, offsets=_offsets(10), positions=_chunk(10, 0.5), now=100.0)  # the arm moves until 101.0
    q.pop(100.15)  # the action due at 100.2 is sent
    # Observation at 100.2, chunk arrives 0.25 s later while the arm was moving: 100.3 and 100.4 are already past.
    result = q.push(stamp=100.2, offsets=_offsets(6), positions=_ramp(6), now=100.45)
    assert result.dropped_stale == 2 and result.queued == 4
    tick = q.pop(100.45)
    assert tick.target_time == pytest.approx(100.5) and tick.positions[0] == pytest.approx(0.02)


def test_a_chunk_for_an_arm_that_held_still_starts_now_whatever_the_inference_took():
    q = ChunkQueue()  # stale actions counted in executed steps: the default
    q.push(stamp=100.0, offsets=_offsets(3), positions=_chunk(3, 0.5), now=100.0)
    assert q.pop(100.25).target_time == pytest.approx(100.3)  # the last action: the queue then runs dry
    assert q.pop(100.4).holding
    # Observed at 100.5 while holding; inference took 2 s, longer than the chunk's 0.6 s horizon. Every action of
    # it is "past" by the clock, yet the arm has not moved since the observation: the plan plays from now.
    result = q.push(stamp=100.5, offsets=_offsets(6), positions=_ramp(6, 0.5), now=102.5)
    assert result.accepted and result.dropped_stale == 0 and result.queued == 6 and result.start == 102.5
    tick = q.pop(102.5)
    assert tick.target_time == pytest.approx(102.6) and tick.positions[0] == pytest.approx(0.5) and not tick.holding
    # By the wall clock the same chunk is entirely overtaken: the arm would never move.
    wall = ChunkQueue(QueueConfig(stale_clock="wall"))
    wall.push(stamp=100.0, offsets=_offsets(3), positions=_chunk(3, 0.5), now=100.0)
    wall.pop(100.25)
    wall.pop(100.4)
    assert wall.push(stamp=100.5, offsets=_offsets(6), positions=_ramp(6, 0.5), now=102.5).dropped_stale == 6
    # The same late chunk for an arm that was still moving after its observation is overtaken entirely.
    moving = ChunkQueue()
    moving.push(stamp=100.0, offsets=_offsets(10), positions=_chunk(10, 0.5), now=100.0)
    moving.pop(100.55)  # the action due at 100.6 is sent, after the observation at 100.5
    late = moving.push(stamp=100.5, offsets=_offsets(6), positions=_ramp(6, 0.5), now=102.5)
    assert late.dropped_stale == 6


def _tick_through(q, start, end, dt=0.05):
    """pop() every control tick in [start, end) like the executor's timer; the ticks' targets and holds."""
    return [q.pop(round(start + k * dt, 6)) for k in range(round((end - start) / dt))]


@pytest.mark.parametrize(("clock", "first_action"), [("executed", 2), ("wall", 6)])
def test_a_chunk_computed_partly_during_a_dry_spell_starts_at_the_executed_step(clock, first_action):
    q = ChunkQueue(QueueConfig(stale_clock=clock))
    q.push(stamp=100.0, offsets=_offsets(5), positions=_chunk(5, 0.1), now=100.0)  # due 100.1 .. 100.5
    ticks = _tick_through(q, 100.0, 101.0)
    # The arm moved until 100.5; the first tick to find the queue dry is 100.55.
    assert next(round(100.0 + 0.05 * k, 2) for k, t in enumerate(ticks) if t.holding) == 100.55
    # Observed at 100.3, computed for 0.7 s: the arm moved 0.25 s of it (2.5 steps at 10 Hz) and held 0.45 s.
    result = q.push(stamp=100.3, offsets=_offsets(20), positions=_ramp(20, 1.0, 0.01), now=101.0)
    assert result.dropped_stale == first_action
    tick = q.pop(101.0)
    assert not tick.holding and tick.positions[0] == pytest.approx(1.0 + 0.01 * first_action)
    if clock == "executed":
        assert result.start == pytest.approx(100.75) and tick.target_time == pytest.approx(101.05)


def test_without_a_dry_spell_executed_steps_and_the_wall_clock_agree():
    queues = {clock: ChunkQueue(QueueConfig(stale_clock=clock)) for clock in ("executed", "wall")}
    seen = {}
    for clock, q in queues.items():
        q.push(stamp=100.0, offsets=_offsets(20), positions=_ramp(20), now=100.0)  # moving until 102.0
        _tick_through(q, 100.0, 100.45)
        # Observed at 100.2 while the arm moved, arrives 0.25 s later: 100.3 and 100.4 were executed.
        result = q.push(stamp=100.2, offsets=_offsets(10), positions=_ramp(10, 0.5), now=100.45)
        ticks = _tick_through(q, 100.45, 101.2)  # the new plan ends at 101.2
        seen[clock] = (result.dropped_stale, result.start, [(t.target_time, t.positions.tolist()) for t in ticks])
        assert result.dropped_stale == 2 and not any(t.holding for t in ticks)
    assert seen["executed"] == seen["wall"]


def _steady_latency_run(config, latency=0.7, horizon=20, dt=0.05, duration=12.0):
    """A policy that answers every request `latency` s later with a chunk observed at the request: the ticks that
    held the last command after the first chunk arrived, the chunks used, and the queue."""
    q = ChunkQueue(config)
    q.seed_hold(np.zeros(6))
    pending, first_arrival, held_after, chunks = None, None, 0, 0
    for k in range(round(duration / dt)):
        now = round(100.0 + k * dt, 6)
        if pending is not None and now >= pending - 1e-9:
            assert q.push(pending - latency, _offsets(horizon), _chunk(horizon, 0.2), now=now).accepted
            first_arrival = first_arrival or now
            pending, chunks = None, chunks + 1
        tick = q.pop(now)
        held_after += first_arrival is not None and tick.holding
        if q.needs_chunk(now) and pending is None:
            q.mark_requested(now)
            pending = now + latency
    return held_after, chunks, q


def test_latency_threshold_requests_just_in_time_so_a_steady_latency_never_runs_the_queue_dry():
    # 20-action chunks at 10 Hz (2 s), 0.7 s latency. A fixed threshold of 0.2 asks with 0.4 s left: too late.
    held, _, _ = _steady_latency_run(QueueConfig(threshold_mode="fixed", threshold=0.2, request_timeout=5.0))
    assert held >= 20
    # Latency mode asks with 0.8 s left whatever the threshold floor, and never holds after the first chunk.
    latency = QueueConfig(threshold_mode="latency", threshold_min=0.1, latency_margin=0.1, request_timeout=5.0)
    held, chunks, q = _steady_latency_run(latency)
    assert held == 0
    assert q.latency == pytest.approx(0.7) and q.threshold_fraction() == pytest.approx(0.4)
    # Fixed 0.5 (1 s left) is never dry either, but asks for more chunks than needed.
    held_fixed, chunks_fixed, _ = _steady_latency_run(QueueConfig(threshold_mode="fixed", threshold=0.5))
    assert held_fixed == 0 and chunks < chunks_fixed


def test_latency_threshold_is_clamped_between_threshold_min_and_the_fixed_threshold():
    q = ChunkQueue(QueueConfig(threshold_mode="latency", threshold=0.5, threshold_min=0.2, latency_margin=0.1))
    assert q.threshold_fraction() == 0.5  # nothing measured yet: the fixed threshold
    q.push(stamp=100.0, offsets=_offsets(10), positions=_chunk(10), now=100.05)  # 0.05 s old on arrival
    assert q.threshold_fraction() == pytest.approx(0.2)  # 0.15 s of a 1 s chunk: the floor
    q.push(stamp=100.0, offsets=_offsets(10), positions=_chunk(10), now=100.3)
    assert q.threshold_fraction() == pytest.approx(0.4)  # 0.3 s + 0.1 s margin
    # 3 s: longer than the chunk. No request can keep the queue from running dry; asking earlier than the fixed
    # threshold would only have the old chunk overtake more of the new one.
    q.push(stamp=100.0, offsets=_offsets(10), positions=_chunk(10), now=103.0)
    assert q.latency == pytest.approx(3.0) and q.threshold_fraction() == 0.5
    # A higher latency raised the estimate at once; a lower one lowers it gradually.
    q.push(stamp=103.0, offsets=_offsets(10), positions=_chunk(10), now=103.5)
    assert 0.5 < q.latency < 3.0


def test_a_chunk_entirely_in_the_past_keeps_the_old_queue():
    q = ChunkQueue()
    q.push(100.0, _offsets(10), _chunk(10, 0.1), now=100.0)
    result = q.push(90.0, _offsets(3), _chunk(3, 0.5), now=100.0)
    assert result.accepted and result.dropped_stale == 3 and result.queued == 10
    assert q.pop(100.0).positions[0] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("mode", "weight", "expected"),
    [(BlendMode.REPLACE, 0.7, 0.5), (BlendMode.AVERAGE, 0.7, 0.3), (BlendMode.WEIGHTED, 0.7, 0.7 * 0.5 + 0.3 * 0.1)],
)
def test_overlap_blending_modes(mode, weight, expected):
    q = ChunkQueue(QueueConfig(blend_mode=mode, blend_weight=weight))
    q.push(100.05, _offsets(10), _chunk(10, 0.1), now=100.05)  # covers 100.15 .. 101.05
    result = q.push(100.5, _offsets(10), _chunk(10, 0.5), now=100.52)  # covers 100.6 .. 101.5
    assert result.blended == 5  # 100.6 .. 101.0 overlap
    # The old action due before the new chunk's start (100.55) stays untouched.
    assert q.pop(100.52).positions[0] == pytest.approx(0.1)
    assert q.pop(100.65).positions[0] == pytest.approx(expected)  # 100.7: overlap
    assert q.pop(101.05).positions[0] == pytest.approx(0.5)  # 101.1: new only


def test_blend_interpolates_the_old_plan_between_its_actions():
    q = ChunkQueue(QueueConfig(blend_mode=BlendMode.AVERAGE))
    q.push(100.0, _offsets(10), _ramp(10, 0.0, 0.1), now=100.0)  # 0.0 at 100.1, 0.1 at 100.2, ...
    q.push(100.05, _offsets(3), _chunk(3, 0.0), now=100.06)  # 100.15: old plan there = 0.05
    tick = q.pop(100.12)
    assert tick.target_time == pytest.approx(100.15)
    assert tick.positions[0] == pytest.approx(0.5 * 0.0 + 0.5 * 0.05)
    # The newer plan wins beyond its end: old actions after 100.35 are gone.
    assert len(q) == 3


def test_threshold_triggers_requests_and_unanswered_requests_repeat():
    q = ChunkQueue(QueueConfig(threshold=0.5, request_timeout=1.0, threshold_mode="fixed"))
    assert q.needs_chunk(100.0)  # empty
    q.mark_requested(100.0)
    assert not q.needs_chunk(100.5)  # in flight
    assert q.needs_chunk(101.0)  # timed out: ask again
    q.push(101.0, _offsets(10), _chunk(10), now=101.0)
    assert not q.needs_chunk(101.0)  # 10 left
    q.pop(101.45)
    assert not q.needs_chunk(101.45)  # 6 left: more than half
    q.pop(101.55)
    assert q.needs_chunk(101.55)  # 5 left: at half, as lerobot's queue size / chunk size <= threshold


@pytest.mark.parametrize("threshold", [0.0, 1.5, -0.1])
def test_threshold_out_of_range_is_refused(threshold):
    with pytest.raises(ValueError, match="threshold"):
        QueueConfig(threshold=threshold)


def test_bad_config_values_are_refused():
    with pytest.raises(ValueError):
        QueueConfig(blend_mode="median")
    with pytest.raises(ValueError, match="blend_weight"):
        QueueConfig(blend_weight=1.2)
    with pytest.raises(ValueError, match="unknown arm"):
        QueueConfig(arm="so42")
    with pytest.raises(ValueError):
        QueueConfig(stale_clock="sundial")
    with pytest.raises(ValueError):
        QueueConfig(threshold_mode="auto")
    with pytest.raises(ValueError, match="threshold_min"):
        QueueConfig(threshold_min=1.5)
    with pytest.raises(ValueError, match="latency_margin"):
        QueueConfig(latency_margin=-0.1)


def test_dry_queue_holds_the_last_command_and_reports_it():
    q = ChunkQueue()
    q.push(100.0, _offsets(3), _ramp(3, 0.2, 0.1), now=100.0)
    q.pop(100.25)
    tick = q.pop(100.4)
    assert tick.holding and tick.positions[0] == pytest.approx(0.4) and tick.target_time is None
    later = q.pop(101.4)
    assert later.holding and later.hold_duration == pytest.approx(1.0)
    assert later.positions[0] == pytest.approx(0.4)


def test_nothing_to_hold_before_any_command_unless_seeded():
    q = ChunkQueue()
    assert q.pop(1.0).positions is None
    q.seed_hold(np.full(6, 0.3))
    assert q.pop(1.1).positions.tolist() == [0.3] * 6


def test_sync_mode_runs_the_whole_chunk_from_its_arrival():
    q = ChunkQueue(QueueConfig(mode=ExecutionMode.SYNC))
    # Arrives 0.25 s after its observation: in sync nothing is dropped, it runs from arrival.
    result = q.push(100.0, _offsets(4), _ramp(4), now=100.25)
    assert result.queued == 4 and result.dropped_stale == 0
    assert not q.needs_chunk(100.3)
    assert q.pop(100.3).positions[0] == pytest.approx(0.0)
    q.pop(100.62)
    assert not q.needs_chunk(100.64)  # last action, due at 100.65, still running
    assert q.needs_chunk(100.66)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda p: p.__setitem__((2, 1), float("nan")), "non-finite action at step 2 joint shoulder_lift"),
        (lambda p: p.__setitem__((0, 0), float("inf")), "non-finite action at step 0 joint shoulder_pan"),
        (lambda p: p.__setitem__((1, 5), math.radians(120)), "step 1 puts gripper at 2.094 rad, outside"),
        (lambda p: p.__setitem__((3, 2), -3.0), "elbow_flex"),
    ],
)
def test_bad_chunks_are_rejected_and_the_arm_holds(mutate, match):
    q = ChunkQueue()
    q.push(100.0, _offsets(5), _chunk(5, 0.1), now=100.0)
    q.pop(100.05)
    bad = _chunk(5, 0.2)
    mutate(bad)
    result = q.push(100.1, _offsets(5), bad, now=100.12)
    assert not result.accepted
    assert result.reason.startswith(match) or match in result.reason
    tick = q.pop(100.15)
    assert tick.holding and tick.positions.tolist() == [0.1] * 6


def test_malformed_chunk_shapes_and_times_are_rejected():
    q = ChunkQueue()
    assert "(H>0, 6)" in q.push(1.0, _offsets(3), np.zeros((3, 5)), now=1.0).reason
    assert "increasing" in q.push(1.0, np.array([0.1, 0.1, 0.2]), np.zeros((3, 6)), now=1.0).reason
    assert "time offsets" in q.push(1.0, _offsets(2), np.zeros((3, 6)), now=1.0).reason
    assert "stamp" in q.push(float("nan"), _offsets(3), np.zeros((3, 6)), now=1.0).reason


def test_so101_limits_apply_when_selected():
    roll = math.radians(162)  # inside the SO-101's wrist_roll range, outside the SO-100's
    chunk = _chunk(2)
    chunk[:, 4] = roll
    assert not ChunkQueue(QueueConfig(arm="so100", limit_tolerance=0.0)).push(1.0, _offsets(2), chunk, now=1.0).accepted
    assert ChunkQueue(QueueConfig(arm="so101", limit_tolerance=0.0)).push(1.0, _offsets(2), chunk, now=1.0).accepted


def test_small_overshoot_is_clamped_onto_the_limit_and_a_wild_one_rejects_the_chunk():
    upper = joints_for("so100")[1].upper  # shoulder_lift
    q = ChunkQueue(QueueConfig(limit_tolerance=0.1))
    near = _chunk(3)
    near[:, 1] = upper + 0.05
    assert q.push(1.0, _offsets(3), near, now=1.0).accepted
    tick = q.pop(now=1.0 + _offsets(3)[0])
    assert tick.positions[1] == upper  # clamped exactly onto the limit, never beyond
    wild = _chunk(3)
    wild[1, 1] = upper + 0.3
    result = q.push(2.0, _offsets(3), wild, now=2.0)
    assert not result.accepted and "shoulder_lift" in result.reason and "step 1" in result.reason


def test_the_policy_side_clamp_fixes_overshoots_near_a_limit_and_leaves_wild_ones_to_be_rejected():
    """clamp_near_limits (the policy node and the evaluation): a flow-matching overshoot past a limit the demonstrations
    rest on (jaws shut, 0.5 rad past their stop) is put on the limit; an action farther out than the margin is left
    as it is, so the executor still rejects a broken model's chunk by joint and step."""
    joints = joints_for("so100")
    chunk = _chunk(4)
    chunk[:, 5] = joints[5].lower - 0.5
    chunk[2, 2] = joints[2].upper + 0.2
    clamped, worst = clamp_near_limits(chunk, joints, margin=1.0)
    assert worst == pytest.approx(0.5)
    assert np.all(clamped[:, 5] == joints[5].lower) and clamped[2, 2] == joints[2].upper
    untouched = np.ones(len(joints), bool)
    untouched[[2, 5]] = False
    assert np.array_equal(clamped[:, untouched], chunk[:, untouched])  # in-limit actions are not changed
    assert ChunkQueue(QueueConfig(limit_tolerance=0.1)).push(1.0, _offsets(4), clamped, now=1.0).accepted
    wild = _chunk(4)
    wild[1, 0] = joints[0].upper + 1.5
    kept, worst = clamp_near_limits(wild, joints, margin=1.0)
    assert worst == pytest.approx(1.5) and np.array_equal(kept, wild)
    result = ChunkQueue(QueueConfig(limit_tolerance=0.1)).push(1.0, _offsets(4), kept, now=1.0)
    assert not result.accepted and "shoulder_pan" in result.reason and "step 1" in result.reason


@settings(max_examples=60, deadline=None)
@given(
    arrivals=st.lists(st.tuples(st.floats(0.0, 0.4), st.integers(2, 12), st.floats(-1.0, 1.0)), min_size=1, max_size=6),
    mode=st.sampled_from(list(BlendMode)),
)
def test_targets_never_go_backwards_in_time_and_stay_in_limits(arrivals, mode):
    q = ChunkQueue(QueueConfig(blend_mode=mode))
    q.seed_hold(np.zeros(6))
    now, last_target = 100.0, -math.inf
    for latency, length, value in arrivals:
        q.push(now - latency, _offsets(length), _chunk(length, value), now=now)
        for _ in range(5):
            now += 0.02
            tick = q.pop(now)
            assert tick.positions is not None and np.all(np.abs(tick.positions) <= 1.0 + 1e-12)
            if tick.target_time is not None:
                assert tick.target_time >= now and tick.target_time >= last_target
                last_target = tick.target_time


def test_actions_due_before_the_target_already_sent_are_dropped():
    q = ChunkQueue(QueueConfig(blend_mode=BlendMode.REPLACE))
    q.push(100.0, _offsets(5), _chunk(5, 0.1), now=100.0)
    assert q.pop(100.01).target_time == pytest.approx(100.1)  # sent to the arm
    # A chunk observed at 99.95 has an action due at 100.05: future, but before what the arm already heads to.
    result = q.push(99.95, _offsets(5), _chunk(5, 0.4), now=100.02)
    assert result.dropped_stale == 1
    assert q.pop(100.03).target_time == pytest.approx(100.1)  # the sent target is kept
    tick = q.pop(100.11)
    assert tick.target_time == pytest.approx(100.15) and tick.positions[0] == pytest.approx(0.4)


def test_a_new_plan_far_from_the_last_command_is_reached_at_the_velocity_cap_not_in_a_jump():
    vmax = np.full(6, 3.0)
    last = np.zeros(6)
    far = np.full((4, 6), 0.5)
    times = 10.0 + 0.02 * np.arange(1, 5)  # 50 Hz
    out = rate_limited(last, times, far, now=10.0, max_velocity=vmax)
    steps = np.abs(np.diff(np.vstack([last, out]), axis=0))
    assert np.allclose(steps, 0.06)  # 3 rad/s x 20 ms, every tick, until the plan is reached
    near = np.full((1, 6), 0.01)
    np.testing.assert_array_equal(rate_limited(last, times[:1], near, 10.0, vmax), near)  # within reach: unchanged
    np.testing.assert_array_equal(rate_limited(None, times, far, 10.0, vmax), far)  # nothing sent yet
