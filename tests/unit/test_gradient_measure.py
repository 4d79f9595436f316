"""Per-objective LoRA gradients on a tiny SD3: their cosines, their split over workers, and
that measuring them leaves the update alone."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from trainer.config import LoraConfig, ModelConfig, TinyModelConfig, TrainingConfig
from trainer.core.conflict import gradient_cosines
from trainer.loop.gradient_conflict import measure_gradient_conflict, objective_gradients
from trainer.loop.update import policy_update
from trainer.model.pipeline import add_lora, load_pipeline
from trainer.model.rollout import encode_prompts, sample, step_log_prob

pytestmark = pytest.mark.slow  # builds a tiny SD3 and runs a few backward passes (seconds)

TINY = ModelConfig(kind="tiny", dtype="float32", tiny=TinyModelConfig(seed=0))
STEPS = torch.tensor([0, 1])


@pytest.fixture(scope="module")
def tiny():
    """A tiny SD3 with a perturbed LoRA (B != 0, so every LoRA matrix has a gradient) and a
    4-sample, 3-step rollout."""
    torch.manual_seed(0)
    pipe = load_pipeline(TINY, "cpu")
    params = add_lora(pipe.transformer, LoraConfig(rank=4, alpha=8.0), seed=0)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn_like(p))
    prompts = ["a red circle", "a blue square", "a green star", "a big word"]
    embeds = encode_prompts(pipe, prompts, max_sequence_length=16, guidance_scale=1.0)
    rollout = sample(
        pipe, embeds, num_steps=3, guidance_scale=1.0, noise_level=0.7, resolution=32,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    return SimpleNamespace(pipe=pipe, params=params, embeds=embeds, rollout=rollout)


def _grads(t, ahat, mb=2, **kwargs):
    return objective_gradients(
        t.pipe.transformer, t.rollout, t.embeds, torch.as_tensor(ahat, dtype=torch.float32),
        STEPS, params=t.params, micro_batch_size=mb, guidance_scale=1.0, **kwargs,
    )  # fmt: skip


def test_equal_opposite_and_scaled_advantages_give_exact_cosines(tiny):
    a = np.array([1.0, -0.5, 0.25, -0.75])
    b = np.array([0.2, 0.9, -1.0, -0.1])
    cos = gradient_cosines(_grads(tiny, np.stack([a, -a, 3 * a, b])).double().numpy())
    assert cos[0, 1] == pytest.approx(-1.0, abs=1e-6)
    assert cos[0, 2] == pytest.approx(1.0, abs=1e-6)
    assert -1 < cos[0, 3] < 1 and abs(cos[0, 3]) < 0.999
    np.testing.assert_array_equal(cos, cos.T)


def test_the_gradient_is_the_plain_surrogate_of_the_whole_batch(tiny):
    """Micro-batches and chunks only split a sum: equal to one autograd pass over all samples."""
    ahat = torch.tensor([[1.0, -0.5, 0.25, -0.75], [0.0, 0.0, 0.0, 0.0]])
    got = _grads(tiny, ahat, mb=1, optimizer_steps=2)
    loss = 0.0
    for j in STEPS.tolist():
        new = step_log_prob(tiny.pipe.transformer, tiny.rollout, j, tiny.embeds, guidance_scale=1)
        loss = loss - (ahat[0] * torch.exp(new.log_prob - tiny.rollout.log_probs[:, j])).sum()
    want = torch.autograd.grad(loss, tiny.params)
    torch.testing.assert_close(got[0], torch.cat([g.reshape(-1) for g in want]))
    assert torch.count_nonzero(got[1]) == 0  # an objective with no advantage: zero gradient
    assert np.isnan(gradient_cosines(got.double().numpy())[0, 1])


def test_two_workers_sum_to_the_whole_batch(tiny):
    """What the all-reduce relies on: the gradients of two halves add up to the whole's."""
    ahat = torch.tensor([[1.0, -0.5, 0.25, -0.75], [-0.3, 0.6, 0.9, -1.2]])
    whole = _grads(tiny, ahat, optimizer_steps=2)
    halves = []
    for part in ([0, 2], [1, 3]):
        rollout, embeds = tiny.rollout.select(torch.tensor(part)), tiny.embeds.select(part)
        grads = objective_gradients(
            tiny.pipe.transformer, rollout, embeds, ahat[:, part], STEPS, params=tiny.params,
            micro_batch_size=2, guidance_scale=1.0, optimizer_steps=2, sample_indices=part,
        )  # fmt: skip
        halves.append(grads)
    torch.testing.assert_close(halves[0] + halves[1], whole, rtol=1e-5, atol=1e-7)


def test_unscored_samples_add_nothing(tiny):
    ahat = torch.tensor([[1.0, float("nan"), 0.25, -0.75]])
    zeroed = torch.tensor([[1.0, 0.0, 0.25, -0.75]])
    torch.testing.assert_close(_grads(tiny, ahat), _grads(tiny, zeroed))


def test_measuring_leaves_the_update_unchanged(tiny):
    """No ``.grad``, no parameter, no RNG touched: the update after a measurement is the same."""
    start = [p.detach().clone() for p in tiny.params]
    cfg = TrainingConfig(optimizer_steps_per_epoch=1, cfg=False, lr=1e-3, kl_beta=0.1)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])

    def update():
        with torch.no_grad():
            for p, s in zip(tiny.params, start, strict=True):
                p.copy_(s)
        stats = policy_update(
            tiny.pipe.transformer, tiny.rollout, tiny.embeds, adv, STEPS, cfg=cfg,
            micro_batch_size=2, optimizer=torch.optim.AdamW(tiny.params, lr=1e-3),
            params=tiny.params, world_size=1,
        )  # fmt: skip
        return stats, [p.detach().clone() for p in tiny.params]

    torch.manual_seed(1)
    plain_stats, plain = update()
    with torch.no_grad():
        for p, s in zip(tiny.params, start, strict=True):
            p.copy_(s)
    torch.manual_seed(1)
    measured = measure_gradient_conflict(
        tiny.pipe.transformer, tiny.rollout, tiny.embeds, torch.stack([adv, -adv]), STEPS,
        params=tiny.params, micro_batch_size=2, guidance_scale=1.0, world_size=1,
    )  # fmt: skip
    assert all(p.grad is None for p in tiny.params)
    assert measured.cosines[0, 1] == pytest.approx(-1.0, abs=1e-6)
    assert measured.norms[0] == pytest.approx(measured.norms[1], rel=1e-6)
    after_stats, after = update()
    assert after_stats == plain_stats
    for a, b in zip(plain, after, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
