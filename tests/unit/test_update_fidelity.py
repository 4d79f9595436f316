"""Where the policy update follows Flow-GRPO's SD3 trainer: the KL scale and the EMA ramp."""

from types import SimpleNamespace

import pytest
import torch

from trainer.config import LoraConfig, ModelConfig, TinyModelConfig, TrainingConfig
from trainer.core.losses import kl_to_reference
from trainer.core.sde import sde_step_mean_std
from trainer.loop.update import LoraEma, policy_update
from trainer.model.pipeline import add_lora, load_pipeline, lora_parameters
from trainer.model.rollout import encode_prompts, sample

pytestmark = pytest.mark.slow  # builds and updates a tiny SD3 (a few seconds)

TINY = ModelConfig(kind="tiny", dtype="float32", tiny=TinyModelConfig(seed=0))


def test_ema_ramp_follows_flow_grpo_then_holds_the_decay():
    ema = LoraEma([torch.nn.Parameter(torch.zeros(2))], decay=0.9)
    assert ema.decay_at(0) == pytest.approx(0.1)
    assert ema.decay_at(10) == pytest.approx(11 / 20)
    assert ema.decay_at(80) == pytest.approx(0.9) and ema.decay_at(500) == pytest.approx(0.9)
    assert all(ema.decay_at(k) <= 0.9 for k in range(200))
    flat = LoraEma([torch.nn.Parameter(torch.zeros(2))], decay=0.9, ramp=False)
    assert flat.decay_at(0) == flat.decay_at(100) == 0.9


def test_ema_update_uses_the_decay_of_its_step():
    param = torch.nn.Parameter(torch.zeros(3))
    ema = LoraEma([param], decay=0.9)
    with torch.no_grad():
        param.fill_(1.0)
    ema.update(0)  # decay 0.1: the shadow moves 90% of the way
    torch.testing.assert_close(ema.shadow[0], torch.full((3,), 0.9))
    ema.update(1000)  # decay 0.9
    torch.testing.assert_close(ema.shadow[0], torch.full((3,), 0.9 * 0.9 + 0.1))


def test_flow_grpo_kl_is_the_exact_kl_times_the_step_size():
    x, v = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    mean, std, std_t = sde_step_mean_std(x, v, 0.75, 0.5, sigma_max=0.97)
    ref = mean + 0.1 * torch.randn_like(mean)
    exact, scaled = kl_to_reference(mean, ref, std), kl_to_reference(mean, ref, std_t)
    torch.testing.assert_close(scaled, exact * 0.25)


@pytest.fixture(scope="module")
def tiny_policy():
    """A tiny SD3 with a perturbed LoRA (so policy != reference) and a 3-step rollout."""
    torch.manual_seed(0)
    pipe = load_pipeline(TINY, "cpu")
    params = add_lora(pipe.transformer, LoraConfig(rank=4, alpha=8.0), seed=0)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn_like(p))
    start = [p.detach().clone() for p in lora_parameters(pipe.transformer)]
    prompts = ["a red circle", "a blue square"]
    embeds = encode_prompts(pipe, prompts, max_sequence_length=16, guidance_scale=1.0)
    rollout = sample(
        pipe, embeds, num_steps=3, guidance_scale=1.0, noise_level=0.7, resolution=32,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    return SimpleNamespace(pipe=pipe, params=params, start=start, embeds=embeds, rollout=rollout)


def _update(t, advantages, step_index=1, ema=None, **training):
    """Restore the adapter, run one epoch's update; returns its stats."""
    with torch.no_grad():
        for p, s in zip(t.params, t.start, strict=True):
            p.copy_(s)
    cfg = TrainingConfig(optimizer_steps_per_epoch=1, cfg=False, lr=1e-3, **training)
    return policy_update(
        t.pipe.transformer, t.rollout, t.embeds, torch.tensor(advantages),
        torch.tensor([step_index]), cfg=cfg, micro_batch_size=2,
        optimizer=torch.optim.AdamW(t.params, lr=1e-3), params=t.params, world_size=1,
        ema=ema,
    )  # fmt: skip


@pytest.mark.parametrize("step_index", [0, 2])
def test_policy_update_applies_the_configured_kl_scale(tiny_policy, step_index):
    """Same rollout and adapter: ``exact``'s logged KL is ``1/|dt|`` times ``flow_grpo``'s."""
    kls = {
        scale: _update(tiny_policy, [1.0, -1.0], step_index, kl_beta=0.5, kl_scale=scale).kl
        for scale in ("flow_grpo", "exact")
    }
    rollout = tiny_policy.rollout
    dt = float(rollout.sigmas[step_index] - rollout.sigmas[step_index + 1])
    assert kls["flow_grpo"] > 0
    assert kls["flow_grpo"] == pytest.approx(kls["exact"] * dt, rel=1e-4)


def _moved(t) -> float:
    return max(float((p.detach() - s).abs().max()) for p, s in zip(t.params, t.start, strict=True))


def test_zero_advantages_are_left_out_of_the_loss(tiny_policy):
    """All advantages 0: skipped, nothing is trained (no KL pull either); kept, the KL moves it."""
    skipped = _update(tiny_policy, [0.0, 0.0], kl_beta=0.5, skip_zero_advantages=True)
    assert skipped.loss == 0.0 and skipped.kl == 0.0 and _moved(tiny_policy) == 0.0
    kept = _update(tiny_policy, [0.0, 0.0], kl_beta=0.5, skip_zero_advantages=False)
    assert kept.kl > 0 and _moved(tiny_policy) > 0


def test_a_zero_advantage_sample_does_not_dilute_the_others(tiny_policy):
    """[A, 0] with skipping trains like the first sample alone: same policy loss."""
    pair = _update(tiny_policy, [1.5, 0.0], skip_zero_advantages=True)
    diluted = _update(tiny_policy, [1.5, 0.0], skip_zero_advantages=False)
    assert pair.policy_loss == pytest.approx(2 * diluted.policy_loss, rel=1e-5)
    assert pair.policy_loss != 0


def _ema_of(t, zero_lora_b: bool) -> LoraEma:
    """An EMA whose shadow is the starting adapter, or (``zero_lora_b``) that adapter with its
    B matrices zeroed, which is the base model exactly."""
    ema = LoraEma(t.params, 0.9, ramp=False)
    names = {id(p): n for n, p in t.pipe.transformer.named_parameters()}
    with torch.no_grad():
        for shadow, p, start in zip(ema.shadow, t.params, t.start, strict=True):
            shadow.copy_(
                torch.zeros_like(start) if zero_lora_b and "lora_B" in names[id(p)] else start
            )
    return ema


def test_an_ema_reference_equal_to_the_policy_has_no_kl_and_trains_like_no_kl(tiny_policy):
    """KL to an EMA equal to the live adapter is 0 and so is its gradient: the update equals
    the one without a KL term, so the swap in and out left the live weights intact."""
    ema = _ema_of(tiny_policy, zero_lora_b=False)
    stats = _update(tiny_policy, [1.0, -1.0], ema=ema, kl_beta=0.5, kl_reference="ema")
    after_ema = [p.detach().clone() for p in tiny_policy.params]
    no_kl = _update(tiny_policy, [1.0, -1.0], kl_beta=0.0)
    assert stats.kl == 0.0 and _moved(tiny_policy) > 0
    for a, b in zip(after_ema, tiny_policy.params, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-7)
    assert stats.policy_loss == pytest.approx(no_kl.policy_loss, rel=1e-5)


def test_an_ema_reference_at_the_base_weights_gives_the_base_reference_kl(tiny_policy):
    """An EMA holding the adapter with B = 0 is the base model: the same KL as ``base``."""
    base = _update(tiny_policy, [1.0, -1.0], kl_beta=0.5, kl_reference="base")
    ema = _ema_of(tiny_policy, zero_lora_b=True)
    as_ema = _update(tiny_policy, [1.0, -1.0], ema=ema, kl_beta=0.5, kl_reference="ema")
    assert base.kl > 0
    assert as_ema.kl == pytest.approx(base.kl, rel=1e-4)


def test_an_ema_reference_needs_the_ema(tiny_policy):
    with pytest.raises(ValueError, match="training.ema"):
        TrainingConfig(kl_reference="ema", ema=False)
    with pytest.raises(ValueError, match="kl_reference 'ema' needs the EMA"):
        _update(tiny_policy, [1.0, -1.0], ema=None, kl_beta=0.5, kl_reference="ema")
