"""The SD3 policy on the tiny in-code model: loading, LoRA, the SDE sampler and its recompute."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.unit.diffusers_reference import diffusers_ode_latents
from trainer.config import LoraConfig, ModelConfig, TinyModelConfig
from trainer.model.pipeline import (
    ModelLoadError,
    add_lora,
    load_lora,
    load_lora_state_dict,
    load_pipeline,
    lora_disabled,
    lora_parameters,
    lora_state_dict,
    save_lora,
)
from trainer.model.rollout import (
    PromptEmbeds,
    Rollout,
    encode_prompts,
    sample,
    step_log_prob,
    train_step_indices,
    velocity,
)

PROMPTS = ["a photo of a cat", "a dog", 'a sign that says "hi"', ""]
STEPS, RES, CFG, NOISE, SEQ = 4, 64, 4.5, 0.7, 32
TINY = ModelConfig(kind="tiny", dtype="float32", tiny=TinyModelConfig(seed=0))
LORA = LoraConfig(rank=4, alpha=8.0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _perturb(params, seed: int, scale: float = 0.05) -> None:
    gen = _gen(seed)
    with torch.no_grad():
        for p in params:
            p.add_(scale * torch.randn(p.shape, generator=gen))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two
    spinning OpenMP threads made these tests 10-50x slower; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    """One tiny pipeline with a perturbed LoRA (B != 0, so the adapter changes the output)."""
    pipe = load_pipeline(TINY, "cpu")
    params = add_lora(pipe.transformer, LORA, seed=0)
    _perturb(params, seed=1)
    embeds = encode_prompts(pipe, PROMPTS, max_sequence_length=SEQ, guidance_scale=CFG)
    rollout = sample(
        pipe,
        embeds,
        num_steps=STEPS,
        guidance_scale=CFG,
        noise_level=NOISE,
        resolution=RES,
        generator=_gen(0),
    )
    return SimpleNamespace(pipe=pipe, params=params, embeds=embeds, rollout=rollout)


def _diffusers_ode_latents(pipe, e, noise):
    """Final latents of diffusers' own ``StableDiffusion3Pipeline.__call__`` from ``noise``."""
    return diffusers_ode_latents(pipe, e, noise, steps=STEPS, guidance=CFG, resolution=RES)


def _sample(t, seed, **kw):
    args = dict(num_steps=STEPS, guidance_scale=CFG, noise_level=NOISE, resolution=RES)
    return sample(t.pipe, t.embeds, generator=_gen(seed), **(args | kw))


def test_rollout_shapes_dtypes_and_schedule(tiny):
    r, c = tiny.rollout, tiny.pipe.transformer.config.in_channels
    assert len(tiny.embeds) == len(PROMPTS) and tiny.embeds.has_negative
    assert r.images.shape == (4, RES, RES, 3) and r.images.dtype == np.uint8
    assert r.latents.shape == (4, STEPS + 1, c, RES // 8, RES // 8)
    assert r.latents.dtype == r.log_probs.dtype == torch.float32
    assert r.log_probs.shape == (4, STEPS) and bool(torch.isfinite(r.log_probs).all())
    assert r.timesteps.shape == (STEPS,) and r.sigmas.shape == (STEPS + 1,)
    assert r.sigmas[0] == 1.0 and r.sigmas[-1] == 0.0 and bool((r.sigmas.diff() < 0).all())
    torch.testing.assert_close(r.timesteps, r.sigmas[:-1] * 1000)
    assert r.images.std() > 0  # not a constant image


def test_sample_is_reproducible_from_the_seed(tiny):
    again, other = _sample(tiny, 0), _sample(tiny, 1)
    assert torch.equal(again.latents, tiny.rollout.latents)
    assert torch.equal(again.log_probs, tiny.rollout.log_probs)
    assert np.array_equal(again.images, tiny.rollout.images)
    assert not torch.allclose(other.latents[:, 0], tiny.rollout.latents[:, 0])
    assert not torch.allclose(other.latents[:, -1], tiny.rollout.latents[:, -1])


def test_per_sample_generators_make_a_sample_independent_of_its_batch(tiny):
    e, args = tiny.embeds, dict(num_steps=2, guidance_scale=CFG, noise_level=NOISE, resolution=32)
    pair = sample(tiny.pipe, e.select([0, 1]), generator=[_gen(10), _gen(11)], **args)
    alone = sample(tiny.pipe, e.select([1]), generator=[_gen(11)], **args)
    assert torch.equal(pair.latents[1, 0], alone.latents[0, 0])
    torch.testing.assert_close(pair.latents[1:], alone.latents, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="generators"):
        sample(tiny.pipe, e.select([0, 1]), generator=[_gen(10)], **args)


def test_recompute_reproduces_the_recorded_log_probs(tiny):
    r = tiny.rollout
    for j in range(STEPS):
        step = step_log_prob(tiny.pipe.transformer, r, j, tiny.embeds)
        torch.testing.assert_close(step.log_prob, r.log_probs[:, j], atol=1e-4, rtol=0)
        torch.testing.assert_close(step.sample, r.latents[:, j + 1])
    # one step per sample, and a re-batched micro-batch (what the trainer does)
    per_sample = torch.tensor([3, 0, 2, 1])
    step = step_log_prob(tiny.pipe.transformer, r, per_sample, tiny.embeds)
    torch.testing.assert_close(
        step.log_prob, r.log_probs[torch.arange(4), per_sample], atol=1e-4, rtol=0
    )
    idx = torch.tensor([2, 0])
    step = step_log_prob(tiny.pipe.transformer, r.select(idx), 1, tiny.embeds.select(idx))
    torch.testing.assert_close(step.log_prob, r.log_probs[idx, 1], atol=1e-4, rtol=0)


def test_gradients_reach_only_the_lora_parameters(tiny):
    transformer = tiny.pipe.transformer
    transformer.zero_grad(set_to_none=True)
    step_log_prob(transformer, tiny.rollout, 1, tiny.embeds).log_prob.sum().backward()
    lora = {n for n, _ in transformer.named_parameters() if ".lora_" in n}
    grads = {n: p.grad for n, p in transformer.named_parameters()}
    assert all(grads[n] is None for n in grads if n not in lora)
    assert any(grads[n] is not None and grads[n].abs().sum() > 0 for n in lora)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in tiny.params)
    transformer.zero_grad(set_to_none=True)


def test_lora_disabled_runs_the_base_model(tiny):
    transformer, r, e = tiny.pipe.transformer, tiny.rollout, tiny.embeds
    x, t = r.latents[:, 1], r.timesteps[1]
    saved = lora_state_dict(transformer)
    with torch.no_grad():
        enabled = velocity(transformer, x, t, e, CFG)
        with lora_disabled(transformer):
            disabled = velocity(transformer, x, t, e, CFG)
        # the base model = the adapter with B = 0 (PEFT's init)
        zero_b = {k: torch.zeros_like(v) if ".lora_B." in k else v for k, v in saved.items()}
        load_lora_state_dict(transformer, zero_b)
        base = velocity(transformer, x, t, e, CFG)
        load_lora_state_dict(transformer, saved)
        after = velocity(transformer, x, t, e, CFG)
    torch.testing.assert_close(disabled, base, atol=1e-6, rtol=0)
    assert (enabled - disabled).abs().max() > 1e-3
    assert torch.equal(after, enabled)  # adapter back on, weights restored
    assert all(p.requires_grad for p in lora_parameters(transformer))


def test_lora_state_dict_round_trip_is_exact(tiny):
    transformer = tiny.pipe.transformer
    state = lora_state_dict(transformer)
    assert state and all(".lora_" in k and v.device.type == "cpu" for k, v in state.items())
    assert len(state) == len(tiny.params)
    _perturb(tiny.params, seed=7)
    assert not all(torch.equal(state[k], v) for k, v in lora_state_dict(transformer).items())
    load_lora_state_dict(transformer, state)
    again = lora_state_dict(transformer)
    assert again.keys() == state.keys() and all(torch.equal(state[k], again[k]) for k in state)
    with pytest.raises(KeyError, match="missing"):
        load_lora_state_dict(transformer, dict(list(state.items())[1:]))


def test_saved_lora_loads_in_diffusers_and_as_init(tiny, tmp_path):
    save_lora(tiny.pipe.transformer, tmp_path)
    r, e = tiny.rollout, tiny.embeds
    with torch.no_grad():
        want = velocity(tiny.pipe.transformer, r.latents[:, 2], r.timesteps[2], e, CFG)
        plain = load_pipeline(TINY, "cpu")
        plain.load_lora_weights(tmp_path)  # a plain diffusers user
        got = velocity(plain.transformer, r.latents[:, 2], r.timesteps[2], e, CFG)
        ours = load_pipeline(TINY, "cpu")
        add_lora(ours.transformer, LORA.model_copy(update={"init_from": str(tmp_path)}))
        init = velocity(ours.transformer, r.latents[:, 2], r.timesteps[2], e, CFG)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert torch.equal(init, want)
    load_lora(ours.transformer, tmp_path / "pytorch_lora_weights.safetensors")


def test_classifier_free_guidance_is_one_batched_call(tiny):
    r, e = tiny.rollout, tiny.embeds
    cond = PromptEmbeds(e.prompt_embeds, e.pooled_prompt_embeds)
    uncond = PromptEmbeds(e.negative_prompt_embeds, e.negative_pooled_prompt_embeds)
    x, t = r.latents[:, 1], r.timesteps[1]
    with torch.no_grad():
        guided = velocity(tiny.pipe.transformer, x, t, e, CFG)
        v_c = velocity(tiny.pipe.transformer, x, t, cond, 1.0)
        v_u = velocity(tiny.pipe.transformer, x, t, uncond, 1.0)
    torch.testing.assert_close(guided, v_u + CFG * (v_c - v_u), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="negative"):
        velocity(tiny.pipe.transformer, x, t, cond, CFG)


def test_zero_noise_is_the_deterministic_euler_sampler(tiny):
    a, b = _sample(tiny, 3, noise_level=0.0), _sample(tiny, 3, noise_level=0.0)
    assert torch.equal(a.log_probs, torch.zeros_like(a.log_probs))
    assert torch.equal(a.latents, b.latents) and np.array_equal(a.images, b.images)
    step = step_log_prob(tiny.pipe.transformer, a, 0, tiny.embeds)
    assert torch.equal(step.log_prob, torch.zeros(4))
    # same result as diffusers' own SD3 Euler sampler from the same noise
    want = _diffusers_ode_latents(tiny.pipe, tiny.embeds, a.latents[:, 0])
    torch.testing.assert_close(a.latents[:, -1], want, atol=1e-5, rtol=1e-5)


def test_rollout_select_and_cat(tiny):
    r = tiny.rollout
    both = Rollout.cat([r.select(slice(0, 2)), r.select([2, 3])])
    assert torch.equal(both.latents, r.latents) and np.array_equal(both.images, r.images)
    assert len(r.select(1)) == 1 and r.select(1).images.shape == (1, RES, RES, 3)
    e = PromptEmbeds.cat([tiny.embeds.select(0), tiny.embeds.select(slice(1, None))])
    assert torch.equal(e.negative_prompt_embeds, tiny.embeds.negative_prompt_embeds)
    with pytest.raises(ValueError, match="differ"):
        Rollout.cat([r, _sample(tiny, 0, noise_level=0.0)])


def test_load_pretrained_from_a_local_directory(tmp_path):
    original = load_pipeline(TINY, "cpu")
    original.save_pretrained(tmp_path / "pipe")
    loaded = load_pipeline(
        ModelConfig(kind="pretrained", pretrained=str(tmp_path / "pipe"), dtype="float32"), "cpu"
    )
    assert not any(p.requires_grad for p in loaded.transformer.parameters())
    outs = []
    for pipe in (original, loaded):
        e = encode_prompts(pipe, PROMPTS[:2], max_sequence_length=SEQ, guidance_scale=CFG)
        outs.append(
            sample(pipe, e, num_steps=3, guidance_scale=CFG, noise_level=NOISE, resolution=32,
                   generator=_gen(5))
        )  # fmt: skip
    # same weights; separately loaded copies may differ in the last float bit
    torch.testing.assert_close(outs[0].latents, outs[1].latents, atol=1e-5, rtol=0)
    torch.testing.assert_close(outs[0].log_probs, outs[1].log_probs, atol=1e-4, rtol=0)
    diff = np.abs(outs[0].images.astype(int) - outs[1].images.astype(int))
    assert diff.max() <= 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="save_pretrained"):
        load_pipeline(ModelConfig(kind="pretrained", pretrained=str(tmp_path / "empty")), "cpu")


def test_bfloat16_base_keeps_lora_and_vae_in_float32():
    pipe = load_pipeline(TINY.model_copy(update={"dtype": "bfloat16"}), "cpu")
    params = add_lora(pipe.transformer, LORA, seed=0)
    _perturb(params, seed=1)
    assert pipe.text_encoder_3.dtype == torch.bfloat16 and pipe.vae.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in params)
    e = encode_prompts(pipe, PROMPTS[:2], max_sequence_length=SEQ, guidance_scale=CFG)
    r = sample(pipe, e, num_steps=2, guidance_scale=CFG, noise_level=NOISE, resolution=32,
               generator=_gen(0))  # fmt: skip
    step = step_log_prob(pipe.transformer, r, 0, e)
    step.log_prob.sum().backward()
    torch.testing.assert_close(step.log_prob, r.log_probs[:, 0], atol=1e-4, rtol=0)
    assert params[1].grad is not None and params[1].grad.dtype == torch.float32


def test_train_step_indices():
    assert train_step_indices(10, 9).tolist() == list(range(9))
    perm = train_step_indices(10, 9, _gen(0))
    assert sorted(perm.tolist()) == list(range(9))
    assert torch.equal(perm, train_step_indices(10, 9, _gen(0)))
    with pytest.raises(ValueError):
        train_step_indices(4, 5)


def test_diffusers_own_ode_sampling_with_the_exported_lora_equals_the_trainers(tiny, tmp_path):
    """What `make sample` relies on: StableDiffusion3Pipeline.__call__ with the exported
    adapter draws the trainer's evaluation samples (the ODE at noise 0, CFG included)."""
    save_lora(tiny.pipe.transformer, tmp_path)
    ours = _sample(tiny, seed=3, noise_level=0.0)
    plain = load_pipeline(TINY, "cpu")
    plain.load_lora_weights(tmp_path)
    theirs = _diffusers_ode_latents(plain, tiny.embeds, ours.latents[:, 0])
    torch.testing.assert_close(theirs, ours.latents[:, -1], atol=1e-5, rtol=0)
