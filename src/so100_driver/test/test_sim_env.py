"""SimEnv: compiles and steps cleanly, tracks commands, rejects bad input, seeds episodes, renders."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

from so100_driver.description import MODELS_DIR
from so100_driver.sim.env import SimConfig, SimEnv


def _warnings(data: mujoco.MjData) -> list[int]:
    return [data.warning[i].number for i in range(len(data.warning))]


@pytest.fixture(scope="module")
def env():
    with SimEnv(SimConfig(cameras=("scene", "wrist"), width=96, height=64)) as sim:
        yield sim


@pytest.mark.parametrize("scene", sorted(p.name for p in MODELS_DIR.glob("scene*.xml")))
def test_every_scene_steps_with_random_controls_without_warnings(scene):
    model = mujoco.MjModel.from_xml_path(str(MODELS_DIR / scene))
    data = mujoco.MjData(model)
    rng = np.random.default_rng(0)
    low, high = model.actuator_ctrlrange.T
    for _ in range(20):
        data.ctrl[:] = rng.uniform(low, high)
        mujoco.mj_step(model, data, nstep=50)
    assert _warnings(data) == [0] * len(data.warning)
    assert np.all(np.isfinite(data.qpos))


def test_a_commanded_trajectory_is_tracked(env):
    env.reset(0)
    amplitude = np.array([0.5, 0.4, -0.4, 0.5, 0.8, 0.3])
    errors = []
    for k in range(120):
        target = np.clip(amplitude * math.sin(2 * math.pi * 0.4 * (k + 1) * env.dt), env.lower, env.upper)
        env.step(target)
        if k >= 15:  # past the start-up transient
            errors.append(np.abs(env.joint_positions() - target))
    worst = np.max(errors, axis=0)
    assert np.all(worst < 0.05), f"tracking error per joint (rad): {worst}"
    assert _warnings(env.data) == [0] * len(env.data.warning)


def test_targets_outside_limits_are_clamped(env):
    env.reset(1)
    for _ in range(60):
        env.step(env.upper + 1.0)
    q = env.joint_positions()
    assert np.all(q <= env.upper + 0.02), q - env.upper
    np.testing.assert_array_equal(env.goal, env.upper)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ([0.0] * 5, "expected 6 joint targets"),
        ([0, 0, math.nan, 0, 0, 0], "finite"),
        ([0, 0, 0, math.inf, 0, 0], "finite"),
    ],
)
def test_bad_targets_raise_and_the_env_keeps_running(env, target, message):
    env.reset(2)
    env.step([0.1] * 6)
    goal_before = env.goal.copy()
    with pytest.raises(ValueError, match=message):
        env.step(target)
    np.testing.assert_array_equal(env.goal, goal_before)
    t = env.time
    obs = env.step([0.1] * 6)
    assert obs["time"] > t and np.all(np.isfinite(obs["state"]))


def test_reset_is_seeded(env):
    env.reset(5)
    first = env.cube_positions()
    instruction = env.instruction
    env.step([0.2] * 6)
    env.reset(5)
    assert env.instruction == instruction
    for colour, pos in env.cube_positions().items():
        np.testing.assert_allclose(pos, first[colour])
    env.reset(6)
    assert any(not np.allclose(pos, first[c]) for c, pos in env.cube_positions().items())
    assert env.time == 0.0 and not env.success()


def test_observation_images_and_state(env):
    obs = env.reset(3)
    assert set(obs["images"]) == {"scene", "wrist"}
    for image in obs["images"].values():
        assert image.shape == (64, 96, 3) and image.dtype == np.uint8
        assert image.std() > 5, "a blank frame"
    assert not np.array_equal(obs["images"]["scene"], obs["images"]["wrist"])
    assert obs["state"].shape == (6,) and obs["time"] == 0.0


def test_speed_is_limited_like_a_servo(env):
    env.reset(4)
    env.step([1.5, 0, 0, 0, 0, 0])  # one 33 ms period: at 3 rad/s the pan can move at most ~0.1 rad
    assert env.joint_positions()[0] < 0.12


def test_time_limit():
    with SimEnv(SimConfig(cameras=(), time_limit=0.5)) as short:
        short.reset(0)
        steps = 0
        while not short.done:
            short.step(np.zeros(6))
            steps += 1
        assert steps == 15


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="control_hz"):
        SimConfig(control_hz=0)
    with pytest.raises(ValueError, match="unknown camera"):
        SimEnv(SimConfig(cameras=("nope",)))


def test_environment_state_lists_the_named_cube_first(env):
    from so100_driver.sim.tasks import Task

    for task, order in (
        (Task("pick", "blue"), ("blue", "red", "green")),
        (Task("stack", "green", "red"), ("green", "red", "blue")),
    ):
        env.reset(3, task, observe=False)
        cubes = env.cube_positions()
        state = env.environment_state()
        assert state.shape == (9,) and state.dtype == np.float32
        np.testing.assert_allclose(state.reshape(3, 3), np.stack([cubes[c] for c in order]), atol=1e-6)
