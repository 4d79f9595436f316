"""The ``performance`` fast paths against the eager path, on the tiny SD3 (CPU).

Each fast path must give the eager path's samples, log-probs and images within the tolerance
stated here and in docs/performance.md ("Trainer fast paths"); the ones that only reorder host
work must be bit-identical. The tiny model has SD3.5's q/k RMS norms and a dual-attention
block, so the fused q/k/v processor meets every attention variant of SD3.5 Medium.
"""

from concurrent.futures import Future
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import JointAttnProcessor2_0

from services.client import ScoreMatrix
from tests.unit.diffusers_reference import diffusers_ode_latents
from trainer.config import (
    LoraConfig,
    ModelConfig,
    PerformanceConfig,
    RewardServiceConfig,
    SamplingConfig,
    TinyModelConfig,
)
from trainer.loop.rollout_phase import sample_and_score
from trainer.model import fast
from trainer.model.merged import lora_merged, qkv_fused
from trainer.model.pipeline import add_lora, load_pipeline, lora_disabled
from trainer.model.rollout import encode_prompts, sample, step_log_prob

PROMPTS = ["a photo of a cat", "a dog", 'a sign that says "hi"', ""]
STEPS, RES, CFG, NOISE, SEQ = 4, 64, 4.5, 0.7, 32
LORA = LoraConfig(rank=4, alpha=8.0)
# stated tolerances (docs/performance.md): float32 on the CPU
SAMPLE_ATOL = 1e-5  # latents of a rewritten model (merged, fused, other attention kernel)
LOG_PROB_ATOL = 1e-6  # recorded log-prob against the update's recompute: |log ratio|
BF16_MERGE_BOUND = 2e-3  # |log ratio| of a bf16 merged rollout, 64 px tiny (measured 5e-4)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads; a busy 2-core machine loses a lot to them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny(dtype: str = "float32") -> SimpleNamespace:
    """A tiny pipeline with a perturbed LoRA (B != 0: the adapter changes the output)."""
    pipe = load_pipeline(ModelConfig(kind="tiny", dtype=dtype, tiny=TinyModelConfig()), "cpu")
    params = add_lora(pipe.transformer, LORA, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    embeds = encode_prompts(pipe, PROMPTS, max_sequence_length=SEQ, guidance_scale=CFG)
    return SimpleNamespace(pipe=pipe, params=params, embeds=embeds)


@pytest.fixture(scope="module")
def tiny() -> SimpleNamespace:
    t = _tiny()
    t.eager = _sample(t)
    return t


def _sample(t, seed: int = 0, **kw):
    args = dict(num_steps=STEPS, guidance_scale=CFG, noise_level=NOISE, resolution=RES)
    return sample(t.pipe, t.embeds, generator=torch.Generator().manual_seed(seed), **(args | kw))


def _log_ratios(t, rollout) -> torch.Tensor:
    """``[B, T]`` log of the PPO ratio before any update: recompute minus recorded."""
    with torch.no_grad():
        steps = [step_log_prob(t.pipe.transformer, rollout, j, t.embeds) for j in range(STEPS)]
    return torch.stack([s.log_prob for s in steps], 1) - rollout.log_probs


def _state(transformer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in transformer.parameters()]


def _same(a: list[torch.Tensor], b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# --- sync-free sampler: the same numbers, bit for bit -------------------------------------


@pytest.mark.parametrize("per_row", [False, True], ids=["one-generator", "per-row"])
@pytest.mark.parametrize("noise_level", [NOISE, 0.0])
def test_sync_free_sampler_is_bit_identical(tiny, noise_level, per_row):
    def gens():
        if per_row:
            return [torch.Generator().manual_seed(s) for s in range(len(PROMPTS))]
        return torch.Generator().manual_seed(0)

    args = dict(num_steps=STEPS, guidance_scale=CFG, resolution=RES, noise_level=noise_level)
    eager = sample(tiny.pipe, tiny.embeds, generator=gens(), **args)
    quick = sample(tiny.pipe, tiny.embeds, generator=gens(), sync_free=True, **args)
    assert torch.equal(eager.latents, quick.latents)
    assert torch.equal(eager.log_probs, quick.log_probs)
    assert np.array_equal(eager.images, quick.images)


# --- LoRA merged for rollouts -----------------------------------------------------------


def test_merged_rollout_matches_eager_and_restores_the_base_weights_exactly(tiny):
    before = _state(tiny.pipe.transformer)
    with lora_merged(tiny.pipe.transformer):
        assert not _same(before, tiny.pipe.transformer.parameters())  # merged in place
        merged = _sample(tiny)
    assert _same(before, tiny.pipe.transformer.parameters())  # copied back, bit for bit
    assert not tiny.pipe.transformer.transformer_blocks[0].attn.to_q.disable_adapters
    torch.testing.assert_close(merged.latents, tiny.eager.latents, atol=SAMPLE_ATOL, rtol=0)
    assert _log_ratios(tiny, merged).abs().max() <= LOG_PROB_ATOL
    assert np.abs(merged.images.astype(int) - tiny.eager.images).max() <= 1


def test_merge_is_a_no_op_for_the_reference_and_undone_after_an_error(tiny):
    before = _state(tiny.pipe.transformer)
    with lora_disabled(tiny.pipe.transformer), lora_merged(tiny.pipe.transformer):
        assert _same(before, tiny.pipe.transformer.parameters())
    with pytest.raises(RuntimeError, match="boom"), lora_merged(tiny.pipe.transformer):
        raise RuntimeError("boom")
    assert _same(before, tiny.pipe.transformer.parameters())
    assert not tiny.pipe.transformer.transformer_blocks[0].attn.to_q.disable_adapters


@pytest.mark.slow
def test_bf16_merge_moves_the_recorded_log_probs_by_a_bounded_amount():
    """bf16 rounds ``W + s B A``: the measured |log ratio| is ~5e-4 here, above the PPO clip
    range 1e-4, which is why the switch is opt-in (docs/performance.md)."""
    t = _tiny("bfloat16")
    eager = _sample(t)
    assert _log_ratios(t, eager).abs().max() == 0  # eager bf16: the recompute is exact
    with lora_merged(t.pipe.transformer):
        merged = _sample(t)
    deviation = _log_ratios(t, merged).abs().max()
    assert 0 < deviation <= BF16_MERGE_BOUND


# --- fused q/k/v --------------------------------------------------------------------------


def test_fused_qkv_matches_and_refuses_a_live_adapter(tiny):
    transformer = tiny.pipe.transformer
    with lora_merged(transformer):
        merged = _sample(tiny)
        with qkv_fused(transformer):
            fused = _sample(tiny)
            attn2 = transformer.transformer_blocks[0].attn2  # SD3.5's second attention
            assert type(attn2.processor) is not JointAttnProcessor2_0
    torch.testing.assert_close(fused.latents, merged.latents, atol=SAMPLE_ATOL, rtol=0)
    torch.testing.assert_close(fused.log_probs, merged.log_probs, atol=LOG_PROB_ATOL, rtol=0)
    attns = [m for m in transformer.modules() if hasattr(m, "processor")]
    assert all(type(m.processor) is JointAttnProcessor2_0 for m in attns)  # restored
    with pytest.raises(ValueError, match="bypass the LoRA"), qkv_fused(transformer):
        pass


# --- attention kernel, VAE dtype, phase contexts --------------------------------------------


def test_math_attention_matches_the_default_kernel(tiny):
    with fast.attention_backend("math"):
        math_ = _sample(tiny)
    torch.testing.assert_close(math_.latents, tiny.eager.latents, atol=SAMPLE_ATOL, rtol=0)
    torch.testing.assert_close(math_.log_probs, tiny.eager.log_probs, atol=1e-5, rtol=0)


def test_prepare_rejects_a_cuda_only_kernel_on_the_cpu(tiny):
    with pytest.raises(ValueError, match="attention_backend=cudnn"):
        fast.prepare(tiny.pipe, PerformanceConfig(attention_backend="cudnn"))


def test_bf16_vae_decode_changes_pixels_by_about_a_level():
    """Measured on the tiny random VAE: mean 0.71 of 255, 99th percentile 4, max 9."""
    t = _tiny()
    eager = _sample(t)
    fast.prepare(t.pipe, PerformanceConfig(vae_dtype="bfloat16"))
    assert t.pipe.vae.dtype == torch.bfloat16
    bf16 = _sample(t)
    assert torch.equal(bf16.latents, eager.latents)  # only the decode changed
    diff = np.abs(bf16.images.astype(int) - eager.images)
    assert diff.mean() <= 1.5 and np.percentile(diff, 99) <= 6 and diff.max() <= 16


class _Client:
    """Scores every image 1.0 at once (what sample_and_score needs of a RewardClient)."""

    def submit(self, images, prompts, rewards):
        future = Future()
        future.set_result(ScoreMatrix(list(rewards), np.ones((len(rewards), len(images)))))
        return future


def test_sampling_phase_with_every_sampling_fast_path(tiny):
    perf = PerformanceConfig(merge_lora_for_rollouts=True, fused_qkv=True, sync_free_sampler=True)
    samples = [(0, i, p) for i, p in enumerate(PROMPTS)]
    kw = dict(epoch=0, seed=3, rewards=["r"], service=RewardServiceConfig())
    sampling = SamplingConfig(
        resolution=RES, num_steps=STEPS, max_sequence_length=SEQ, micro_batch_size=2
    )
    before = _state(tiny.pipe.transformer)
    eager = sample_and_score(tiny.pipe, _Client(), samples, sampling=sampling, **kw)
    quick = sample_and_score(
        tiny.pipe, _Client(), samples, sampling=sampling, performance=perf, **kw
    )
    assert _same(before, tiny.pipe.transformer.parameters())
    r, q = eager.rollout, quick.rollout
    torch.testing.assert_close(q.latents, r.latents, atol=SAMPLE_ATOL, rtol=0)
    torch.testing.assert_close(q.log_probs, r.log_probs, atol=LOG_PROB_ATOL, rtol=0)


# --- the config's cross-checks ---------------------------------------------------------------


def test_fused_qkv_without_the_merge_is_a_config_error_naming_the_fix():
    from trainer.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="merge_lora_for_rollouts=true"):
        load_config(None, ["performance.fused_qkv=true"])
    ok = load_config(None, ["performance.fused_qkv=true", "lora.target_modules=[attn.to_out.0]"])
    assert ok.performance.fused_qkv  # no adapter on q/k/v: nothing to bypass
    with pytest.raises(ConfigError, match="scaling.use_gpu=false"):
        load_config(None, ["performance.attention_backend=cudnn", "scaling.use_gpu=false"])
    assert not load_config(None, []).performance.any_enabled  # the default is the eager path


# --- regional compilation -----------------------------------------------------------------


@pytest.mark.slow
def test_compiled_blocks_give_the_eager_samples_log_probs_and_gradients():
    """aot_eager traces every block variant (sampling, policy fwd+bwd, reference, merged)
    through dynamo and AOT autograd; inductor's kernels are checked on the GPU run."""
    t = _tiny()
    eager = _sample(t, num_steps=2)
    step = step_log_prob(t.pipe.transformer, eager, 1, t.embeds)
    step.log_prob.sum().backward()
    grads = [p.grad.clone() for p in t.params]
    for p in t.params:
        p.grad = None
    assert fast.compile_blocks(t.pipe.transformer, mode="default", backend="aot_eager") == 2
    try:
        compiled = _sample(t, num_steps=2)
        again = step_log_prob(t.pipe.transformer, eager, 1, t.embeds)
        again.log_prob.sum().backward()
        with lora_merged(t.pipe.transformer):
            merged = _sample(t, num_steps=2)
    finally:
        fast.uncompile_blocks(t.pipe.transformer)
    torch.testing.assert_close(compiled.latents, eager.latents, atol=SAMPLE_ATOL, rtol=0)
    torch.testing.assert_close(again.log_prob, step.log_prob, atol=LOG_PROB_ATOL, rtol=0)
    for p, g in zip(t.params, grads, strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(merged.latents, eager.latents, atol=SAMPLE_ATOL, rtol=0)
    assert all(b._compiled_call_impl is None for b in t.pipe.transformer.transformer_blocks)


# --- the sampler's equivalence with diffusers' own pipeline, fast paths on ------------------


def test_ode_sampling_under_every_sampling_fast_path_equals_diffusers_pipeline(tiny, tmp_path):
    """At ``noise_level = 0`` the sampler is diffusers' Euler ODE: with the LoRA merged, q/k/v
    fused, the math attention kernel and the sync-free sampler it must still draw what
    ``StableDiffusion3Pipeline.__call__`` draws with the exported adapter loaded."""
    from trainer.model.pipeline import load_pipeline, save_lora

    save_lora(tiny.pipe.transformer, tmp_path)
    perf = PerformanceConfig(
        merge_lora_for_rollouts=True,
        fused_qkv=True,
        sync_free_sampler=True,
        attention_backend="math",
    )
    with fast.for_rollout(tiny.pipe, perf):
        ours = _sample(tiny, seed=5, noise_level=0.0, sync_free=True)
    plain = load_pipeline(ModelConfig(kind="tiny", dtype="float32", tiny=TinyModelConfig()), "cpu")
    plain.load_lora_weights(tmp_path)
    start = ours.latents[:, 0]
    theirs = diffusers_ode_latents(
        plain, tiny.embeds, start, steps=STEPS, guidance=CFG, resolution=RES
    )
    torch.testing.assert_close(theirs, ours.latents[:, -1], atol=SAMPLE_ATOL, rtol=0)
