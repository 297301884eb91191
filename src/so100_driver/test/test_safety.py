"""The joint-space safety layer: its guarantees hold whatever the input (hypothesis), plus the e-stop/watchdog."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from so100_driver.joints import SO100_JOINTS
from so100_driver.safety import CommandWatchdog, SafetyLayer, SafetyLimits, UnsafeCommandError

LIMITS = SafetyLimits.from_joints(SO100_JOINTS, velocity_scale=0.8, max_acceleration=15.0, max_step=0.05)
J = len(SO100_JOINTS)
EPS = 1e-9

any_float = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)
targets = st.lists(st.lists(any_float, min_size=J, max_size=J), min_size=1, max_size=40)
dts = st.lists(st.floats(min_value=1e-4, max_value=2.0), min_size=40, max_size=40)
starts = st.lists(st.floats(min_value=-1.0, max_value=1.0), min_size=J, max_size=J)


@settings(max_examples=300, deadline=None)
@given(start=starts, targets=targets, dts=dts)
def test_outputs_stay_inside_limits_and_step_caps(start, targets, dts):
    layer = SafetyLayer(LIMITS)
    layer.reset(LIMITS.clamp(np.array(start)))
    previous = layer.last_command
    previous_velocity = np.zeros(J)
    for target, dt in zip(targets, dts, strict=False):
        out = layer.filter(np.array(target), dt)
        assert np.all(np.isfinite(out))
        assert np.all(out >= LIMITS.lower - EPS) and np.all(out <= LIMITS.upper + EPS)
        step = np.abs(out - previous)
        assert np.all(step <= LIMITS.max_step + EPS)
        assert np.all(step <= LIMITS.max_velocity * dt + EPS)
        velocity = (out - previous) / dt
        # Acceleration is capped except where a position limit stops the joint.
        at_limit = (np.abs(out - LIMITS.lower) < 1e-9) | (np.abs(out - LIMITS.upper) < 1e-9)
        accel_ok = np.abs(velocity - previous_velocity) <= LIMITS.max_acceleration * dt + 1e-6
        assert np.all(accel_ok | at_limit)
        previous, previous_velocity = out, velocity


@settings(max_examples=100, deadline=None)
@given(outside=st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=J, max_size=J), targets=targets)
def test_arm_started_outside_limits_only_moves_back(outside, targets):
    start = LIMITS.upper + np.array(outside)
    layer = SafetyLayer(LIMITS)
    layer.reset(start)
    previous = start
    for target in targets:
        out = layer.filter(np.array(target), 0.01)
        assert np.all(out <= np.maximum(previous, LIMITS.upper) + EPS), "moved further outside its limits"
        assert np.all(np.abs(out - previous) <= LIMITS.max_step + EPS)
        previous = out


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_targets_raise_naming_the_joint(bad):
    layer = SafetyLayer(LIMITS)
    layer.reset(np.zeros(J))
    target = np.zeros(J)
    target[2] = bad
    with pytest.raises(UnsafeCommandError, match="elbow_flex"):
        layer.filter(target, 0.01)
    assert np.array_equal(layer.last_command, np.zeros(J))


def test_wrong_length_and_bad_dt_raise():
    layer = SafetyLayer(LIMITS)
    layer.reset(np.zeros(J))
    with pytest.raises(UnsafeCommandError, match="5 values for 6 joints"):
        layer.filter(np.zeros(5), 0.01)
    with pytest.raises(UnsafeCommandError, match="period"):
        layer.filter(np.zeros(J), 0.0)


def test_converges_to_reachable_target_without_overshoot():
    layer = SafetyLayer(LIMITS)
    layer.reset(np.zeros(J))
    target = np.array([0.5, -0.4, 0.3, 0.2, -1.0, 0.8])
    trace = [layer.filter(target, 0.01) for _ in range(400)]
    assert np.allclose(trace[-1], target, atol=1e-6)
    # The discrete acceleration cap may pass the goal by a hair; never by a servo tick (2*pi/4096 rad).
    assert np.all(np.abs(np.array(trace)) <= np.abs(target) + 2 * math.pi / 4096)


def test_estop_latches_until_reset():
    layer = SafetyLayer(LIMITS)
    layer.reset(np.zeros(J))
    moved = layer.filter(np.full(J, 0.3), 0.01)
    layer.estop("test")
    for _ in range(10):
        assert np.array_equal(layer.filter(np.full(J, 0.3), 0.01), moved)
    layer.reset_estop()
    assert np.all(layer.filter(np.full(J, 0.3), 0.01) >= moved)


def test_watchdog_expires_and_supervised_deadline():
    dog = CommandWatchdog(0.5)
    assert not dog.expired(100.0)  # nothing armed yet
    dog.feed(0.0)
    assert not dog.expired(0.5) and dog.expired(0.51)
    dog.feed(0.0, until=3.0)
    assert not dog.expired(3.4) and dog.expired(3.6)
    dog.disarm()
    assert not dog.expired(10.0)
    with pytest.raises(ValueError, match="positive"):
        CommandWatchdog(0.0)


def test_limits_validation():
    with pytest.raises(ValueError, match="velocity_scale"):
        SafetyLimits.from_joints(SO100_JOINTS, velocity_scale=1.5)
    with pytest.raises(ValueError, match="max_step"):
        SafetyLimits.from_joints(SO100_JOINTS, max_step=0.0)
