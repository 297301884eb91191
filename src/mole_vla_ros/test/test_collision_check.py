"""Collision-checked chunks: the MuJoCo checker rejects a chunk into the table or into the arm itself, passes free
chunks and the scripted expert's demonstrations; the MoveIt checker says clearly when moveit_py is missing."""

import importlib.util

import numpy as np
import pytest

from mole_vla_ros.execution.collision_check import (
    Collision,
    MoveItChunkChecker,
    MujocoChunkChecker,
    default_srdf,
    make_checker,
)
from so100_driver.collision import TABLE, Obstacle
from so100_driver.description import forward_kinematics

HOME = np.zeros(6)
READY = np.array([0.0, 0.0, 0.0, 1.2, 0.0, 0.6])
INTO_TABLE = np.array([0.0, 0.6, 0.3, 0.7, 0.0, 0.6])  # the jaws 5 cm below the table top


@pytest.fixture(scope="module")
def checker():
    return MujocoChunkChecker("so100")


def _tip_height(q):
    return forward_kinematics(q)["gripper_tip"][2, 3]


def test_a_chunk_driving_the_gripper_into_the_table_is_rejected_at_its_first_colliding_step(checker):
    chunk = np.linspace(HOME, INTO_TABLE, 50)
    hit = checker.check(chunk)
    assert isinstance(hit, Collision)
    assert hit.body2 == "table" and hit.body1 in ("gripper_link", "jaw_link")
    assert hit.depth > checker.tolerance
    assert np.allclose(hit.positions, chunk[hit.step])
    # The step before is free: the reported step is the first one into the table.
    assert checker.check(chunk[: hit.step]) is None
    assert _tip_height(chunk[hit.step]) < _tip_height(chunk[0])
    text = hit.describe()
    assert f"step {hit.step}" in text and "table" in text and hit.body1 in text and "shoulder_lift=" in text


@pytest.mark.parametrize("arm", ["so100", "so101"])
def test_free_chunks_pass(arm):
    checker = MujocoChunkChecker(arm)
    assert checker.check(np.linspace(HOME, READY, 50)) is None
    sweep = np.linspace([-1.5, -0.5, 0.3, 0.5, -2.0, 1.5], [1.5, -0.5, 0.3, 0.5, 2.0, -0.1], 50)  # pan + roll high up
    assert checker.check(sweep) is None


def test_self_collision_is_caught_but_adjacent_links_are_not_reported(checker):
    # Folding the forearm and gripper back down onto the base: the jaws hit the base, not the table.
    fold = np.array([0.0, -1.7, 1.69, 1.6, 0.0, 0.0])
    hit = checker.check(np.linspace(HOME, fold, 40))
    assert hit is not None
    assert "base_link" in (hit.body1, hit.body2) or "shoulder_link" in (hit.body1, hit.body2)
    adjacent = {("base_link", "shoulder_link"), ("wrist_link", "gripper_link"), ("lower_arm_link", "wrist_link")}
    assert (hit.body1, hit.body2) not in adjacent and (hit.body2, hit.body1) not in adjacent


def test_known_obstacles_count(checker):
    reach = np.array([0.6, 0.5, -0.3, 0.4, 0.0, 0.0])  # out to the side, jaws 10 cm over the table
    chunk = np.linspace(HOME, reach, 30)
    assert checker.check(chunk) is None
    tip = forward_kinematics(reach)["gripper_tip"][:3, 3]
    boxed = MujocoChunkChecker("so100", obstacles=(TABLE, Obstacle("cup", (0.03, 0.03, 0.05), tuple(tip))))
    hit = boxed.check(chunk)
    assert hit is not None and hit.body2 == "cup" and hit.step > 0


def test_bad_chunks_raise_clear_errors(checker):
    with pytest.raises(ValueError, match="H x 6"):
        checker.check(np.zeros((5, 5)))
    with pytest.raises(ValueError, match="finite"):
        checker.check(np.full((2, 6), np.nan))
    with pytest.raises(ValueError, match="must be one of"):
        make_checker("bullet")
    with pytest.raises(ValueError, match="tolerance"):
        MujocoChunkChecker(tolerance=-1.0)


def test_the_srdf_decides_which_self_pairs_are_checked(checker, tmp_path):
    # An SRDF that disables every pair turns self-collision checking off; the table still counts.
    text = default_srdf("so100").read_text()
    enabled = checker.model.self_pairs
    assert enabled
    pairs = "".join(f'<disable_collisions link1="{a}" link2="{b}" reason="Never"/>' for a, b in enabled)
    loose = tmp_path / "loose.srdf"
    loose.write_text(text.replace("</robot>", pairs + "</robot>"))
    fold = np.linspace(HOME, [0.0, -1.7, 1.69, 1.6, 0.0, 0.0], 40)
    strict = checker.check(fold)
    assert strict is not None and "table" not in (strict.body1, strict.body2)
    assert MujocoChunkChecker("so100", srdf=loose).check(fold[: strict.step + 1]) is None
    assert MujocoChunkChecker("so100", srdf=loose).check(np.linspace(HOME, INTO_TABLE, 50)) is not None


@pytest.mark.skipif(importlib.util.find_spec("moveit") is not None, reason="moveit_py installed: checked live")
def test_moveit_checker_without_moveit_py_says_what_to_install():
    with pytest.raises(RuntimeError, match="moveit_py"):
        MoveItChunkChecker()
    with pytest.raises(RuntimeError, match="mujoco"):
        make_checker("moveit")


def test_scripted_expert_demonstrations_pass(checker):
    # No false alarms on what the policy is trained to do: picks that end with the jaws around a cube on the table.
    from so100_driver.sim.env import SimConfig, SimEnv
    from so100_driver.sim.expert import ScriptedExpert, run_episode

    with SimEnv(SimConfig(cameras=())) as env:
        expert = ScriptedExpert(env)
        for seed in (0, 1):
            actions: list[np.ndarray] = []
            record = actions.append
            assert run_episode(env, expert, seed, on_step=lambda _obs, a, record=record: record(np.array(a)))
            demo = np.array(actions)
            assert checker.check(demo) is None
            assert min(_tip_height(q) for q in demo) < 0.03  # it did go down to the table
