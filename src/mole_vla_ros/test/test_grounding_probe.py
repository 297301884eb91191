"""The grounding probe counts where the policy's heads point: exact for a policy that knows, 1 in 3 for one that
always points at the same cube."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mole_vla_ros.policy.testing import tiny_policy
from mole_vla_ros.train import grounding
from so100_driver.sim.env import SimEnv
from so100_driver.sim.tasks import parse_instruction


@pytest.fixture
def scene_log(monkeypatch):
    """Every SimEnv the probe resets, so a fake head can read the true cube centres."""
    envs = []
    reset = SimEnv.reset

    def logged(self, *args, **kwargs):
        envs.append(self)
        return reset(self, *args, **kwargs)

    monkeypatch.setattr(SimEnv, "reset", logged)
    return envs


def _fake_heads(envs, colour_of):
    def heads(policy, batch):
        cubes = envs[-1].cube_positions()
        centre = cubes[colour_of(batch["instruction"][0])]
        return torch.tensor(np.r_[centre, np.zeros(6)], dtype=torch.float32)[None], None

    return heads


def test_a_policy_pointing_at_the_named_cube_scores_every_probe(monkeypatch, scene_log):
    policy = tiny_policy(w_env_state=1.0, env_state_dim=9)
    monkeypatch.setattr(grounding, "cognition_heads", _fake_heads(scene_log, lambda text: parse_instruction(text).cube))
    result = grounding.probe(policy, ["scene"], (48, 48), scenes=2)
    summary = result.as_dict()
    assert summary["probes"] == 6 and summary["env_state_hit_rate"] == 1.0
    assert summary["env_state_error_cm"] == pytest.approx(0.0, abs=1e-4)
    assert np.array_equal(result.confusion, 2 * np.eye(3, dtype=int))
    assert summary["future_hit_rate"] is None  # no future head: not probed


def test_a_policy_deaf_to_the_colour_word_scores_one_in_three(monkeypatch, scene_log):
    policy = tiny_policy(w_env_state=1.0, env_state_dim=9)
    monkeypatch.setattr(grounding, "cognition_heads", _fake_heads(scene_log, lambda text: "red"))
    result = grounding.probe(policy, ["scene"], (48, 48), scenes=2)
    assert result.as_dict()["env_state_hit_rate"] == pytest.approx(1 / 3)
    assert result.confusion[:, 0].tolist() == [2, 2, 2] and result.confusion[:, 1:].sum() == 0


def test_the_real_heads_come_back_in_data_units():
    policy = tiny_policy(w_env_state=1.0, env_state_dim=9, w_future=1.0)
    policy.set_normalization({"observation.environment_state": {"mean": [5.0] * 9, "std": [1e-6] * 9}})
    batch = {"images": [torch.rand(1, 3, 48, 48)], "instruction": ["pick up the red cube"], "state": torch.zeros(1, 6)}
    env_state, future = grounding.cognition_heads(policy, batch)
    assert env_state.shape == (1, 9) and torch.allclose(env_state, torch.full((1, 9), 5.0), atol=1e-3)
    assert future.shape == (1, 6)
