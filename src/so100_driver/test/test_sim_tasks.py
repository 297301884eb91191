"""Tasks: instruction text <-> task, seeded placement, success detectors; the scripted expert solves them."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from so100_driver.sim.env import SimConfig, SimEnv
from so100_driver.sim.expert import ScriptedExpert, run_episode
from so100_driver.sim.scene import CUBE_COLORS
from so100_driver.sim.tasks import (
    HOLD_TIME,
    MIN_CUBE_SPACING,
    SuccessDetector,
    Task,
    parse_instruction,
    place_cubes,
    sample_task,
)

ALL_TASKS = [Task("pick", c) for c in CUBE_COLORS] + [
    Task("stack", a, b) for a, b in itertools.permutations(CUBE_COLORS, 2)
]


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: t.instruction)
def test_instruction_round_trips(task):
    assert parse_instruction(task.instruction) == task


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Pick up the RED cube.", Task("pick", "red")),
        ("  grab   the blue block ", Task("pick", "blue")),
        ("stack the green cube on top of the red cube", Task("stack", "green", "red")),
        ("place blue onto green", Task("stack", "blue", "green")),
    ],
)
def test_instruction_variants(text, expected):
    assert parse_instruction(text) == expected


@pytest.mark.parametrize("text", ["", "dance", "pick up the purple cube", "put the red cube on the red one"])
def test_unparsable_instruction_is_a_clear_error(text):
    with pytest.raises(ValueError, match=r"instruction|stack task"):
        parse_instruction(text)


def test_place_cubes_is_seeded_and_spaced():
    a, b = place_cubes(np.random.default_rng(3)), place_cubes(np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    for seed in range(50):
        poses = place_cubes(np.random.default_rng(seed))
        for p, q in itertools.combinations(poses[:, :2], 2):
            assert np.linalg.norm(p - q) >= MIN_CUBE_SPACING


def test_sample_task_covers_the_kinds():
    kinds = {sample_task(np.random.default_rng(s)).kind for s in range(30)}
    assert kinds == {"pick", "stack"}


def _cubes(red_z=0.015, green=(0.2, 0.0, 0.015)):
    return {"red": np.array([0.2, 0.0, red_z]), "green": np.array(green), "blue": np.array([0.1, 0.1, 0.015])}


def test_pick_succeeds_only_when_lifted_and_held():
    detector = SuccessDetector(Task("pick", "red"))
    assert not detector.update(0.0, _cubes(red_z=0.1))
    assert not detector.update(HOLD_TIME / 2, _cubes(red_z=0.1))
    assert not detector.update(HOLD_TIME * 0.75, _cubes(red_z=0.015)), "dropped: the hold restarts"
    assert not detector.update(HOLD_TIME, _cubes(red_z=0.1))
    assert detector.update(2 * HOLD_TIME + 0.01, _cubes(red_z=0.1))


def test_stack_needs_release_and_alignment():
    detector = SuccessDetector(Task("stack", "red", "green"))
    stacked = _cubes(red_z=0.045, green=(0.2, 0.0, 0.015))
    assert not detector.update(0.0, stacked, gripper_touching=True)
    assert not detector.update(1.0, stacked, gripper_touching=True)
    assert not detector.update(1.1, _cubes(red_z=0.045, green=(0.25, 0.0, 0.015)))
    detector.update(2.0, stacked)
    assert detector.update(2.0 + HOLD_TIME, stacked)


@pytest.fixture(scope="module")
def expert_env():
    with SimEnv(SimConfig(cameras=())) as env:
        yield env, ScriptedExpert(env)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expert_picks(expert_env, seed):
    env, expert = expert_env
    assert run_episode(env, expert, seed, task=Task("pick", ("red", "green", "blue")[seed]))
    assert env.cube_positions()[env.task.cube][2] > 0.05


@pytest.mark.parametrize("seed", [10, 11])
def test_expert_stacks(expert_env, seed):
    env, expert = expert_env
    assert run_episode(env, expert, seed, task="put the blue cube on the red one")
    cubes = env.cube_positions()
    assert cubes["blue"][2] > cubes["red"][2] + 0.02


def test_expert_works_on_the_so101_too():
    with SimEnv(SimConfig(arm="so101", cameras=())) as env:
        assert run_episode(env, ScriptedExpert(env), 4, task="put the blue cube on the red one")


def test_a_slower_expert_still_picks_and_takes_longer(expert_env):
    """The demonstrator's pace (bench_async_sync --expert-speed): human-paced tasks, same success."""
    env, expert = expert_env
    assert run_episode(env, expert, 0, task=Task("pick", "red"))
    brisk = env.time
    assert run_episode(env, ScriptedExpert(env, speed=0.1), 0, task=Task("pick", "red"))
    assert env.time > 1.5 * brisk
    with pytest.raises(ValueError, match="speed"):
        ScriptedExpert(env, speed=0.0)


def test_a_recovery_demonstration_misses_lifts_reopens_and_then_picks(expert_env):
    """retry_share=1: the first grasp is aimed beside the cube, the empty jaws lift and re-open, the second grasp
    picks; the cube leaves the table only in the second."""
    env, _ = expert_env
    expert = ScriptedExpert(env, retry_share=1.0)
    phases, cube_z = [], {}

    def watch(_obs, _action):
        phases.append(expert.phase)
        cube_z[expert.phase] = max(cube_z.get(expert.phase, 0.0), env.cube_positions()["red"][2])

    assert run_episode(env, expert, 0, task=Task("pick", "red"), on_step=watch) and expert.retrying
    order = list(dict.fromkeys(phases))
    assert order[:6] == ["above_miss", "descend_miss", "close_miss", "lift_miss", "reopen", "above"], order
    assert cube_z["lift_miss"] < 0.03 < cube_z["hold"]


def test_a_hidden_miss_is_executed_but_not_recorded(expert_env):
    """show_misses=False: the arm still misses first (the cube stays down until the second grasp), but the frames
    aiming, descending and closing beside the cube are not demonstrations; the recording opens on the empty jaws
    lifting, so nothing recorded teaches the policy to aim beside the cube."""
    env, _ = expert_env
    expert = ScriptedExpert(env, retry_share=1.0, show_misses=False)
    executed, recorded = [], []  # the phase each action was computed in; (phase, jaw target) per recorded frame
    original = expert.act

    def act():
        executed.append(expert.phase)
        return original()

    expert.act = act
    assert run_episode(
        env, expert, 0, task=Task("pick", "red"), on_step=lambda _o, a: recorded.append((executed[-1], a[5]))
    )
    assert expert.retrying
    staged = ("above_miss", "descend_miss", "close_miss")
    assert list(dict.fromkeys(executed))[:3] == list(staged)
    phases = [phase for phase, _ in recorded]
    assert not set(staged) & set(phases) and phases[0] == "lift_miss", list(dict.fromkeys(phases))
    assert len(recorded) == len(executed) - sum(p in staged for p in executed)
    assert recorded[0][1] == pytest.approx(env.lower[5])  # the jaws are shut when the recording starts


def test_action_noise_perturbs_the_executed_targets_not_the_recorded_ones(expert_env):
    """DART: the arm runs the expert's target plus a slow offset; the recorded action is the expert's own, so a
    policy cloned from it learns to steer back. The jaws are never perturbed; targets stay inside the limits."""
    env, _ = expert_env
    expert = ScriptedExpert(env, action_noise=0.04)
    recorded, sent = [], []
    original = expert.executed

    def spy(action):
        out = original(action)
        recorded.append(np.array(action)), sent.append(out)
        return out

    expert.executed = spy
    assert run_episode(env, expert, 1, task=Task("pick", "green"))
    offset = np.array(sent) - np.array(recorded)
    assert 0.01 < offset[:, :5].std() < 0.08 and np.all(offset[:, 5] == 0.0)
    lag1 = np.mean([np.corrcoef(offset[:-1, j], offset[1:, j])[0, 1] for j in range(5)])
    assert lag1 > 0.7, lag1  # a drift the servos can follow (white noise: ~0)
    assert np.all(np.array(sent) >= env.lower) and np.all(np.array(sent) <= env.upper)
    for bad in ({"retry_share": 1.5}, {"action_noise": -0.1}):
        with pytest.raises(ValueError, match=r"retry share|action noise"):
            ScriptedExpert(env, **bad)
