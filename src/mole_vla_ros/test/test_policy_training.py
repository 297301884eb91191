"""Training behaviour: router gradients, CogKD identities, the loss parts, overfitting a handful of examples."""

import dataclasses

import pytest
import torch

from mole_vla_ros.policy.cogkd import cogkd_loss, per_token_loss, token_weights
from mole_vla_ros.policy.router import load_balance_loss, straight_through, top_k_mask
from mole_vla_ros.policy.testing import fixed_noise, make_batch, tiny_policy


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("skip_mode", ["skip_expert", "project", "reuse"])
def test_gradients_reach_the_router(skip_mode):
    policy = tiny_policy(skip_mode=skip_mode).train()
    loss, parts = policy(make_batch(policy, batch=2), budget=0.5)
    loss.backward()
    for name, param in policy.router.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert policy.router.spatial[0].weight.grad.abs().sum() > 0
    assert policy.router.temporal.weight.grad.abs().sum() > 0
    assert set(parts) >= {"loss", "flow", "cogkd", "balance", "active_fraction"}
    assert parts["active_fraction"] == 0.5


def test_full_budget_gives_the_router_no_gradient():
    """Every layer runs at budget 1.0: a router gradient there would only saturate its scores (one fixed set)."""
    policy = tiny_policy().train()
    batch = make_batch(policy, batch=2)
    policy(batch, budget=1.0)[0].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in policy.router.parameters())
    assert policy.expert.parameters().__next__().grad is not None
    policy.zero_grad()
    policy(batch, budget=0.5)[0].backward()
    assert policy.router.spatial[0].weight.grad.abs().sum() > 0


def test_straight_through_value_is_exactly_hard():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], requires_grad=True)
    hard = top_k_mask(probs, 2)
    gate = straight_through(probs, hard)
    assert torch.equal(gate, hard.float())
    (gate * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(probs.grad, torch.tensor([[1.0, 2.0, 3.0]] * 2))


def test_load_balance_is_one_when_uniform_and_larger_when_collapsed():
    uniform = torch.full((4, 4), 0.25)
    hard_spread = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
    assert load_balance_loss(uniform, hard_spread).item() == pytest.approx(1.0)
    collapsed = torch.tensor([[0.5, 0.5, 0.0, 0.0]] * 4)
    assert load_balance_loss(collapsed, top_k_mask(collapsed, 2)).item() == pytest.approx(2.0)


def test_cogkd_zero_for_identical_features_positive_otherwise():
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 5, 8, generator=gen) for _ in range(3)]
    weights = token_weights(torch.rand(2, 5, generator=gen), torch.rand(2, 5, generator=gen))
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    assert cogkd_loss(feats, [f.clone() for f in feats], weights).item() == 0.0
    shifted = [f + 0.1 * torch.randn(f.shape, generator=gen) for f in feats]
    assert cogkd_loss(shifted, feats, weights).item() > 0.0
    assert (per_token_loss(shifted[0], feats[0]) > 0).all()


def test_cogkd_weights_follow_the_cognition_attention():
    student = torch.zeros(1, 3, 4)
    teacher = torch.zeros(1, 3, 4)
    teacher[0, 2] = 1.0  # only token 2 differs
    attend_2 = token_weights(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.2, 0.2, 0.6]]))
    attend_0 = token_weights(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.6, 0.2, 0.2]]))
    assert cogkd_loss([student], [teacher], attend_2).item() > 0.0
    assert cogkd_loss([student], [teacher], attend_0).item() == 0.0


@pytest.mark.parametrize("kd_target", ["kv", "hidden"])
def test_policy_cogkd_zero_at_full_budget_positive_when_routed(kd_target):
    policy = tiny_policy(kd_target=kd_target).train()
    batch = make_batch(policy, batch=2)
    _, full = policy(batch, budget=1.0)
    _, half = policy(batch, budget=0.5)
    assert full["cogkd"] == 0.0
    assert half["cogkd"] > 0.0


def test_ema_teacher_follows_the_student():
    policy = tiny_policy(ema_decay=0.5).train()
    assert policy.teacher is None  # until the first update: the live backbone teaches
    policy.update_teacher()
    first = next(policy.teacher.parameters()).clone()
    with torch.no_grad():
        next(policy.backbone.parameters()).add_(1.0)
    policy.update_teacher()
    torch.testing.assert_close(next(policy.teacher.parameters()), first + 0.5)
    assert not any(p.requires_grad for p in policy.teacher.parameters())
    assert not any(k.startswith("_teacher") for k in policy.state_dict())


def test_padded_actions_do_not_count_in_the_flow_loss():
    policy = tiny_policy().train()
    batch = make_batch(policy, batch=2)
    pad = torch.zeros_like(batch["action_is_pad"])
    pad[:, -3:] = True
    torch.manual_seed(3)
    _, a = policy({**batch, "action_is_pad": pad}, budget=0.5)
    garbage = batch["action"].clone()
    garbage[:, -3:] = 1e3
    torch.manual_seed(3)
    _, b = policy({**batch, "action": garbage, "action_is_pad": pad}, budget=0.5)
    assert a["flow"] == pytest.approx(b["flow"], rel=1e-6)


def test_tiny_model_overfits_synthetic_examples():
    """4 (image, instruction, state) -> chunk examples; the chunk depends on all three inputs."""
    torch.manual_seed(0)
    policy = tiny_policy(seed=0, w_kd=0.1).train()
    cfg = policy.config
    gen = torch.Generator().manual_seed(5)
    n = 4
    images = torch.rand(n, 3, 32, 32, generator=gen)
    state = torch.randn(n, cfg.state_dim, generator=gen)
    phase = torch.linspace(0, 1, cfg.chunk_size)[None, :, None]
    actions = torch.sin(3 * phase + images.mean((1, 2, 3))[:, None, None] * 6 + state[:, None, :]) * 0.8
    batch = {
        "images": [images],
        "instruction": ["pick", "place", "push", "pull"],
        "state": state,
        "action": actions,
        "action_is_pad": torch.zeros(n, cfg.chunk_size, dtype=torch.bool),
    }
    # Each example 4 times per step (fresh noise and t per row) to tame the flow-matching loss's variance.
    repeated = {
        k: (v.repeat_interleave(4, 0) if torch.is_tensor(v) else [x for x in v for _ in range(4)])
        for k, v in batch.items()
        if k != "images"
    }
    repeated["images"] = [images.repeat_interleave(4, 0)]
    optim = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    losses = []
    for _ in range(250):
        loss, parts = policy(repeated, budget=0.5)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(parts["flow"])
    start, end = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    assert end < start / 10, (start, end)
    pred = policy.predict_action_chunk(batch, budget=0.5, noise=fixed_noise(policy, n)).actions
    assert (pred - actions).pow(2).mean() < 0.1 * actions.pow(2).mean()


def test_no_teacher_pass_without_distillation():
    policy = tiny_policy(w_kd=0.0).train()
    calls = []
    policy.backbone.layers[-1].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
    _, parts = policy(make_batch(policy, batch=2), budget=1.0)
    assert calls == [1] and parts["cogkd"] == 0.0  # the student pass only
    policy.config = dataclasses.replace(policy.config, w_kd=0.5)
    policy(make_batch(policy, batch=2), budget=1.0)
    assert calls == [1, 1, 1]  # student + teacher


def test_future_state_loss_trains_the_cognition_token_and_needs_its_target():
    policy = tiny_policy(w_future=1.0, future_horizon=10, w_kd=0.0, w_balance=0.0).train()
    batch = make_batch(policy, batch=2)
    with pytest.raises(ValueError, match="future_state"):
        policy(batch, budget=1.0)
    future = torch.randn(2, policy.config.state_dim)
    loss, parts = policy({**batch, "future_state": future}, budget=1.0)
    assert parts["future"] > 0 and loss.item() == pytest.approx(parts["flow"] + parts["future"], rel=1e-5)
    loss.backward()
    assert policy.cognition.grad.abs().sum() > 0 and policy.future_head.weight.grad.abs().sum() > 0
    # The head only learns from the cognition token: a different future moves the loss, the flow term stays.
    torch.manual_seed(0)
    _, a = policy({**batch, "future_state": future}, budget=1.0)
    torch.manual_seed(0)
    _, b = policy({**batch, "future_state": future + 5.0}, budget=1.0)
    assert b["future"] > a["future"] + 1.0 and a["flow"] == pytest.approx(b["flow"], rel=1e-6)


def test_environment_state_loss_trains_its_head_from_the_cognition_token_in_normalised_units():
    policy = tiny_policy(w_env_state=1.0, env_state_dim=9, w_kd=0.0, w_balance=0.0).train()
    env = torch.rand(2, 9) * 0.2
    mean, std = env.mean(0), env.std(0) + 0.01
    stats = {"observation.environment_state": {"mean": mean.tolist(), "std": std.tolist()}}
    policy.set_normalization(stats)
    batch = make_batch(policy, batch=2)
    with pytest.raises(ValueError, match="environment_state"):
        policy(batch, budget=1.0)
    with pytest.raises(ValueError, match=r"must be \(B, 9\)"):
        policy({**batch, "environment_state": env[:, :3]}, budget=1.0)
    loss, parts = policy({**batch, "environment_state": env}, budget=1.0)
    assert loss.item() == pytest.approx(parts["flow"] + parts["env_state"], rel=1e-5)
    loss.backward()
    assert policy.cognition.grad.abs().sum() > 0 and policy.env_state_head.weight.grad.abs().sum() > 0
    with torch.no_grad():
        cognition_free = policy.env_state_head.bias.detach()  # weight zeroed: the prediction is the bias alone
        policy.env_state_head.weight.zero_()
        _, zeroed = policy({**batch, "environment_state": env}, budget=1.0)
    expected = ((cognition_free - (env - mean) / std) ** 2).mean().item()
    assert zeroed["env_state"] == pytest.approx(expected, rel=1e-4)  # the target is normalised by the stats
    assert "normalizer.env_state_mean" in policy.state_dict()
    assert not any("env_state" in k for k in tiny_policy().state_dict())
    with pytest.raises(ValueError, match="env_state_dim"):
        tiny_policy(w_env_state=1.0)


def test_no_future_head_or_loss_by_default():
    policy = tiny_policy().train()
    _, parts = policy(make_batch(policy, batch=2), budget=1.0)
    assert policy.future_head is None and parts["future"] == 0.0
    assert not any(k.startswith("future_head") for k in policy.state_dict())
