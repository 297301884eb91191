"""Inference behaviour of MoLePolicy: shapes, exact budgets, real skipping, full-budget identity."""

import pytest
import torch

from mole_vla_ros.policy import MoLeConfig
from mole_vla_ros.policy.skip import run_layers
from mole_vla_ros.policy.testing import fixed_noise, force_router, make_batch, tiny_policy


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_chunk_shapes_masks_and_timings():
    policy = tiny_policy()
    batch = make_batch(policy, batch=3, cameras=2)
    pred = policy.predict_action_chunk(batch, budget=0.5)
    cfg, L = policy.config, policy.num_layers
    assert pred.actions.shape == (3, cfg.chunk_size, cfg.action_dim)
    assert torch.isfinite(pred.actions).all()
    assert pred.active_mask.shape == (3, L) and pred.active_mask.dtype == torch.bool
    assert pred.scores.shape == (3, L)
    torch.testing.assert_close(pred.scores.sum(-1), torch.ones(3))
    # The kept layers are the top-k by score.
    for row in range(3):
        kept = pred.scores[row][pred.active_mask[row]]
        dropped = pred.scores[row][~pred.active_mask[row]]
        assert kept.min() >= dropped.max()
    assert set(pred.timings) >= {"vision", "llm", "expert", "total"}
    assert 0.0 < pred.flops_fraction < 1.0


@pytest.mark.parametrize(("budget", "k"), [(0.01, 1), (0.25, 1), (0.5, 2), (0.75, 3), (1.0, 4), (None, 2)])
def test_budget_is_exact(budget, k):
    policy = tiny_policy()
    pred = policy.predict_action_chunk(make_batch(policy, batch=4), budget=budget)
    assert pred.active_mask.sum(-1).tolist() == [k] * 4


@pytest.mark.parametrize("budget", [0.0, -0.5, 1.01, float("nan")])
def test_bad_budget_rejected(budget):
    policy = tiny_policy()
    with pytest.raises(ValueError, match="budget"):
        policy.predict_action_chunk(make_batch(policy), budget=budget)


def _count_calls(modules):
    counts = [0] * len(modules)

    def hook(i):
        def fn(*_):
            counts[i] += 1

        return fn

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(modules)]
    return counts, handles


@pytest.mark.parametrize("skip_mode", ["skip_expert", "project", "reuse"])
def test_skipped_layers_are_not_executed(skip_mode):
    policy = tiny_policy(skip_mode=skip_mode)
    cfg = policy.config
    vlm_mlp, _ = _count_calls([layer.mlp for layer in policy.backbone.layers])
    vlm_q, _ = _count_calls([layer.self_attn.q_proj for layer in policy.backbone.layers])
    vlm_k, _ = _count_calls([layer.self_attn.k_proj for layer in policy.backbone.layers])
    expert_mlp, _ = _count_calls([layer.mlp for layer in policy.expert.layers])
    pred = policy.predict_action_chunk(make_batch(policy, batch=1), budget=0.5)
    active = pred.active_mask[0].tolist()
    assert vlm_mlp == [int(a) for a in active]
    assert vlm_q == [int(a) for a in active]
    # "project" pays only the K/V projections for a skipped layer; "reuse" only at layer 0 (nothing to reuse
    # yet); "skip_expert" never.
    projected = {
        "project": [True] * len(active),
        "reuse": [i == 0 for i in range(len(active))],
        "skip_expert": [False] * len(active),
    }[skip_mode]
    assert vlm_k == [int(a or p) for a, p in zip(active, projected, strict=True)]
    if skip_mode == "skip_expert":
        assert expert_mlp == [cfg.num_steps * int(a) for a in active]
    else:
        assert expert_mlp == [cfg.num_steps] * policy.num_layers


def test_forced_mask_runs_exactly_those_layers_without_the_router():
    policy = tiny_policy()
    router_calls, _ = _count_calls([policy.router])
    vlm_mlp, _ = _count_calls([layer.mlp for layer in policy.backbone.layers])
    batch = make_batch(policy, batch=2)
    mask = torch.tensor([False, True, False, True])
    pred = policy.predict_action_chunk(batch, noise=fixed_noise(policy, 2), active_mask=mask)
    assert pred.active_mask.tolist() == [mask.tolist()] * 2
    assert vlm_mlp == [0, 1, 0, 1] and router_calls == [0]
    assert pred.flops_fraction == pytest.approx(policy.predict_action_chunk(batch, budget=0.5).flops_fraction)
    # The same layers through the router give the same chunk: the forced path is the routed path minus the router.
    force_router(policy, torch.tensor([[0.1, 0.4, 0.1, 0.4]] * 2))
    routed = policy.predict_action_chunk(batch, budget=0.5, noise=fixed_noise(policy, 2))
    torch.testing.assert_close(routed.actions, pred.actions)
    rows = torch.tensor([[True, False, False, False], [True, True, True, True]])
    assert policy.predict_action_chunk(batch, active_mask=rows).active_mask.tolist() == rows.tolist()
    for bad, match in [
        (mask.float(), "bool"),
        (torch.ones(3, dtype=torch.bool), "active_mask must be"),
        (torch.zeros(4, dtype=torch.bool), "at least one layer"),
    ]:
        with pytest.raises(ValueError, match=match):
            policy.predict_action_chunk(batch, active_mask=bad)
    with pytest.raises(ValueError, match="not both"):
        policy.predict_action_chunk(batch, budget=0.5, active_mask=mask)


def test_mixed_batch_runs_each_layer_only_for_rows_that_keep_it():
    policy = tiny_policy()
    force_router(policy, torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]]))
    seen_rows = [[] for _ in range(policy.num_layers)]
    for idx, layer in enumerate(policy.backbone.layers):
        layer.mlp.register_forward_pre_hook(lambda _m, args, i=idx: seen_rows[i].append(args[0].shape[0]))
    batch, noise = make_batch(policy, batch=2), fixed_noise(policy, 2)
    pred = policy.predict_action_chunk(batch, budget=0.5, noise=noise)
    assert pred.active_mask.tolist() == [[True, True, False, False], [False, False, True, True]]
    assert seen_rows == [[1], [1], [1], [1]]
    # Batched routing equals running each sample alone.
    for row in range(2):
        force_router(policy, torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]])[row : row + 1])
        single = {k: (v[row : row + 1] if torch.is_tensor(v) else v) for k, v in batch.items()}
        single["images"] = [img[row : row + 1] for img in batch["images"]]
        single["instruction"] = batch["instruction"][row : row + 1]
        alone = policy.predict_action_chunk(single, budget=0.5, noise=noise[row : row + 1])
        torch.testing.assert_close(alone.actions[0], pred.actions[row], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("skip_mode", ["skip_expert", "project", "reuse"])
def test_full_budget_equals_plain_model(skip_mode):
    policy = tiny_policy(skip_mode=skip_mode)
    batch, noise = make_batch(policy, batch=2), fixed_noise(policy, 2)
    routed = policy.predict_action_chunk(batch, budget=1.0, noise=noise).actions
    with torch.no_grad():
        prefix = policy._embed_prefix(batch, {})
        out = run_layers(policy.backbone, prefix.embeds, prefix.rope, prefix.mask, None, skip_mode)
        plain = policy.normalizer.unaction(policy._denoise(prefix, out, None, noise)[..., : policy.config.action_dim])
    assert torch.equal(routed, plain)


def test_lower_budget_changes_the_output():
    policy = tiny_policy()
    batch, noise = make_batch(policy, batch=1), fixed_noise(policy, 1)
    full = policy.predict_action_chunk(batch, budget=1.0, noise=noise).actions
    half = policy.predict_action_chunk(batch, budget=0.5, noise=noise).actions
    assert not torch.allclose(full, half)


def test_text_padding_is_dropped_from_the_prefix_without_changing_chunks_scores_or_the_training_loss():
    policy = tiny_policy()
    batch, noise = make_batch(policy, batch=3), fixed_noise(policy, 3)  # instructions of 20, 19 and 12 bytes
    runs = {}
    for trim in (True, False):
        policy.trim_text_padding = trim
        with torch.no_grad():
            length = policy._embed_prefix(batch, {}).embeds.shape[1]
        pred = policy.predict_action_chunk(batch, budget=0.5, noise=noise)
        policy.train()
        torch.manual_seed(3)  # the same flow-matching noise and time in both passes
        loss, _ = policy(batch, budget=0.5)
        policy.zero_grad()
        loss.backward()
        grad = policy.state_proj.weight.grad.clone()
        runs[trim] = (length, pred, loss.detach(), grad)
    (trimmed, pred, loss, grad), (padded, pred_padded, loss_padded, grad_padded) = runs[True], runs[False]
    # The longest instruction plus its newline is 21 bytes of the preset's 40 slots: 19 padding columns go.
    assert padded - trimmed == policy.config.tokenizer_max_length - 21
    torch.testing.assert_close(pred.actions, pred_padded.actions, rtol=0, atol=1e-5)
    torch.testing.assert_close(pred.scores, pred_padded.scores, rtol=0, atol=1e-6)
    assert torch.equal(pred.active_mask, pred_padded.active_mask)
    torch.testing.assert_close(loss, loss_padded, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_padded, rtol=1e-4, atol=1e-6)


def test_select_action_pops_a_chunk_then_refills():
    policy = tiny_policy()
    batch = make_batch(policy, batch=2)
    calls = []
    original = policy.predict_action_chunk
    policy.predict_action_chunk = lambda *a, **k: calls.append(1) or original(*a, **k)
    actions = [policy.select_action(batch) for _ in range(policy.config.chunk_size + 1)]
    assert all(a.shape == (2, policy.config.action_dim) for a in actions)
    assert len(calls) == 2
    policy.reset()
    policy.select_action(batch)
    assert len(calls) == 3


def test_normalization_maps_actions_back_to_radians():
    policy = tiny_policy()
    batch, noise = make_batch(policy, batch=1), fixed_noise(policy, 1)
    base = policy.predict_action_chunk(batch, budget=0.5, noise=noise).actions
    mean, std = torch.linspace(-1, 1, 6), torch.linspace(0.5, 2.0, 6)
    policy.set_normalization({"action": {"mean": mean, "std": std}})
    scaled = policy.predict_action_chunk(batch, budget=0.5, noise=noise).actions
    torch.testing.assert_close(scaled, base * std + mean)


@pytest.mark.parametrize(
    "stats",
    [
        {"action": {"mean": torch.zeros(5), "std": torch.ones(5)}},
        {"action": {"mean": torch.zeros(6), "std": torch.zeros(6)}},
        {"action": {"mean": torch.zeros(6)}},
        {"observation.images": {"mean": 0, "std": 1}},
    ],
)
def test_bad_stats_rejected(stats):
    with pytest.raises(ValueError):
        tiny_policy().set_normalization(stats)


def test_bad_batches_rejected():
    policy = tiny_policy()
    batch = make_batch(policy, batch=2)
    with pytest.raises(ValueError, match="state"):
        policy.predict_action_chunk({**batch, "state": torch.zeros(2, 5)})
    with pytest.raises(ValueError, match="batch size"):
        policy.predict_action_chunk({**batch, "instruction": ["only one"]})
    with pytest.raises(ValueError, match="images"):
        policy.predict_action_chunk({**batch, "images": []})
    with pytest.raises(ValueError, match="non-finite"):
        policy.predict_action_chunk({**batch, "state": torch.full((2, 6), float("nan"))})


def test_config_validation_and_presets():
    assert MoLeConfig.preset("smolvlm2-500m").num_kept_layers == 16
    with pytest.raises(ValueError, match="preset"):
        MoLeConfig.preset("huge")
    with pytest.raises(ValueError, match="skip_mode"):
        MoLeConfig.preset("tiny", skip_mode="maybe")
    with pytest.raises(ValueError, match="input_size"):
        MoLeConfig.preset("tiny", input_size=60)
    with pytest.raises(ValueError, match="num_kept_layers"):
        MoLeConfig.preset("tiny", num_kept_layers=9)


def test_vision_film_modulates_the_patches_before_the_vision_layers_per_sample_and_camera():
    policy = tiny_policy(vision_film=True)
    batch = make_batch(policy, batch=2, cameras=2)
    red = {**batch, "instruction": ["pick up the red cube", "pick up the red cube"]}
    mixed = {**batch, "instruction": ["pick up the red cube", "pick up the blue cube"]}
    plain = tiny_policy()  # same seed, same weights, no modulation
    with torch.no_grad():
        torch.testing.assert_close(policy._embed_prefix(red, {}).visual, plain._embed_prefix(red, {}).visual)
        torch.nn.init.normal_(policy.vision_film.weight, std=0.5)
        a, b = policy._embed_prefix(red, {}).visual, policy._embed_prefix(mixed, {}).visual
    torch.testing.assert_close(a[0], b[0])  # sample 0's instruction is the same: both cameras untouched
    per_camera = (a[1] - b[1]).abs().view(2, -1, a.shape[-1]).amax(dim=(1, 2))
    assert (per_camera > 1e-3).all()  # sample 1 changed in both of its cameras' tokens
    assert "vision_film.weight" in policy.state_dict() and "vision_film.weight" not in plain.state_dict()


def test_text_film_starts_as_identity_and_then_makes_the_visual_tokens_depend_on_the_instruction():
    policy = tiny_policy(text_film=True)
    batch = make_batch(policy, batch=2)
    red = {**batch, "instruction": ["pick up the red cube"] * 2}
    blue = {**batch, "instruction": ["pick up the blue cube"] * 2}
    with torch.no_grad():
        assert torch.equal(policy._embed_prefix(red, {}).visual, policy._embed_prefix(blue, {}).visual)
        film, policy.text_film = policy.text_film, None
        unmodulated = policy._embed_prefix(red, {}).visual
        policy.text_film = film
        torch.testing.assert_close(policy._embed_prefix(red, {}).visual, unmodulated)
        torch.nn.init.normal_(film.weight, std=0.5)  # what training moves it to
        assert (policy._embed_prefix(red, {}).visual - policy._embed_prefix(blue, {}).visual).abs().max() > 1e-3
    assert "text_film.weight" in policy.state_dict() and "text_film.weight" not in tiny_policy().state_dict()
