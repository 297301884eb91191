"""The fast path computes what the plain path computes, and skips what it skips.

On this CPU: the choice logic, the expert layers compiled with inductor (equal to eager within 1e-4 rad), bf16
weights (equal within bf16 rounding, normaliser kept fp32), and skipped layers never called after compiling.
The CUDA-graph path needs a GPU and is skipped here with that reason.
"""

from __future__ import annotations

import pytest
import torch

from mole_vla_ros.policy.fast_path import choose, enable_fast_path
from mole_vla_ros.policy.testing import fixed_noise, make_batch, tiny_policy

NEEDS_CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device: bf16 weights and CUDA graphs are GPU-only choices"
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # other suites share this CPU
    yield
    torch.set_num_threads(threads)


def predict(policy, budget: float, batch_size: int = 2, **kwargs) -> torch.Tensor:
    batch = make_batch(policy, batch_size)
    return policy.predict_action_chunk(batch, budget=budget, noise=fixed_noise(policy, batch_size), **kwargs)


def test_choice_on_this_machine():
    cpu = choose("cpu")
    assert (cpu.weights, cpu.compile) == (torch.float32, "off") and cpu.reasons
    assert choose("cpu", weights="bf16", compile="default").weights == torch.bfloat16
    with pytest.raises(ValueError, match="CUDA graphs"):
        choose("cpu", compile="reduce-overhead")
    with pytest.raises(ValueError, match="weights"):
        choose("cpu", weights="fp16")
    if not torch.cuda.is_available():
        assert choose("auto").device.type == "cpu"
        with pytest.raises(ValueError, match="no CUDA device"):
            choose("cuda")


@pytest.mark.slow  # inductor compiles four layers' C++ kernels: ~30 s of CPU
def test_compiled_expert_layers_equal_eager_and_skipped_layers_are_never_called():
    plain, fast = tiny_policy(seed=3), tiny_policy(seed=3)
    plan = enable_fast_path(fast, device="cpu", compile="default")
    assert plan.compile == "default"
    for budget in (1.0, 0.5):
        want, got = predict(plain, budget), predict(fast, budget)
        assert torch.equal(want.active_mask, got.active_mask)
        torch.testing.assert_close(got.actions, want.actions, rtol=1e-4, atol=1e-4)

    calls = [0] * fast.num_layers
    for idx, layer in enumerate(fast.expert.layers):
        compiled = layer._compiled_call_impl
        assert compiled is not None, "the layer was not compiled"

        def counting(*args, _idx=idx, _compiled=compiled, **kwargs):
            calls[_idx] += 1
            return _compiled(*args, **kwargs)

        layer._compiled_call_impl = counting
    mask = torch.tensor([True, False, True, False])
    batch = make_batch(fast, 2)
    noise = fixed_noise(fast, 2)
    got = fast.predict_action_chunk(batch, noise=noise, active_mask=mask)
    want = plain.predict_action_chunk(batch, noise=noise, active_mask=mask)
    torch.testing.assert_close(got.actions, want.actions, rtol=1e-4, atol=1e-4)
    steps = fast.config.num_steps
    assert calls == [steps, 0, steps, 0], calls  # skip_expert: a skipped VLM layer's expert layer never runs


def test_bf16_weights_keep_the_actions_within_bf16_rounding():
    plain, fast = tiny_policy(seed=4), tiny_policy(seed=4)
    enable_fast_path(fast, device="cpu", weights="bf16", compile="off")
    assert fast.expert.layers[0].q_proj.weight.dtype == torch.bfloat16
    assert fast.cognition.dtype == torch.bfloat16
    assert fast.normalizer.action_mean.dtype == torch.float32  # actions are unnormalised at full precision
    want, got = predict(plain, 0.5), predict(fast, 0.5)
    assert got.actions.dtype == torch.float32
    assert torch.equal(want.active_mask, got.active_mask)
    scale = want.actions.abs().max()
    assert (got.actions - want.actions).abs().max() <= 0.05 * scale, (got.actions - want.actions).abs().max()


def test_a_quantized_policy_is_refused():
    policy = tiny_policy().quantize_int8_()
    with pytest.raises(ValueError, match="int8"):
        enable_fast_path(policy, device="cpu")


@NEEDS_CUDA
def test_cuda_fast_path_equals_the_plain_path_within_bf16_rounding():
    plain, fast = tiny_policy(seed=5), tiny_policy(seed=5)
    plan = enable_fast_path(fast, device="cuda")
    assert plan.compile == "reduce-overhead"
    for budget in (1.0, 0.5, 0.25):
        want = predict(plain, budget, batch_size=1)
        for _ in range(3):  # warm-up, capture, replay
            got = predict(fast, budget, batch_size=1)
        assert torch.equal(want.active_mask, got.active_mask.cpu())
        scale = want.actions.abs().max()
        assert (got.actions.cpu() - want.actions).abs().max() <= 0.05 * scale
