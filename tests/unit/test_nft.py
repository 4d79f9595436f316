"""DiffusionNFT's loss and update (``training.policy_loss: nft``): the direction each sample
pulls the velocity, the noise draws, and one update of a tiny SD3."""

import pytest
import torch

from trainer.config import LoraConfig, ModelConfig, TinyModelConfig, TrainingConfig
from trainer.core.nft import nft_loss, optimality
from trainer.loop.nft_update import forward_noise, nft_update
from trainer.model.pipeline import add_lora, load_pipeline
from trainer.model.rollout import encode_prompts, sample


def test_optimality_maps_clipped_advantages_onto_zero_one():
    r = optimality(torch.tensor([-9.0, -5.0, -2.5, 0.0, 2.5, 5.0, 9.0]), adv_clip=5.0)
    torch.testing.assert_close(r, torch.tensor([0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]))
    with pytest.raises(ValueError, match="adv_clip"):
        optimality(torch.zeros(1), adv_clip=0.0)


def _batch(advantage: float, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x0, noise = torch.randn(1, 4, 6, 6, generator=gen), torch.randn(1, 4, 6, 6, generator=gen)
    sigma = torch.tensor([0.6])
    x_t = (1 - sigma) * x0 + sigma * noise
    v_old = torch.randn(1, 4, 6, 6, generator=gen)  # a policy that does not fit x0 yet
    return x0, noise, sigma, x_t, v_old, torch.tensor([advantage])


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_a_good_sample_pulls_the_velocity_toward_itself_and_a_bad_one_pushes_it_away(beta):
    for advantage, sign in ((1.5, 1.0), (-1.5, -1.0)):
        x0, noise, sigma, x_t, v_old, adv = _batch(advantage)
        v_theta = v_old.clone().requires_grad_(True)
        out = nft_loss(v_theta, v_old, x_t, x0, sigma, adv, beta=beta, adv_clip=5.0)
        out.loss.backward()
        toward_sample = noise - x0 - v_old  # flow matching's target minus the old velocity
        step = -v_theta.grad  # gradient descent's direction
        cosine = torch.nn.functional.cosine_similarity(step.flatten(), toward_sample.flatten(), 0)
        assert float(cosine) == pytest.approx(sign, abs=1e-5)
        # at v_theta = v_old the gradient is the advantage times plain flow matching's
        x0_err = (x_t - sigma * v_old - x0).abs().mean()
        plain = -2 * sigma**2 * toward_sample / x0_err / toward_sample.numel()
        torch.testing.assert_close(v_theta.grad, advantage * plain, rtol=1e-4, atol=1e-7)


def test_a_sample_at_its_group_mean_moves_nothing_and_the_kl_pulls_to_the_reference():
    x0, _, sigma, x_t, v_old, _ = _batch(0.0)
    v_theta = v_old.clone().requires_grad_(True)
    out = nft_loss(v_theta, v_old, x_t, x0, sigma, torch.zeros(1), beta=1.0, adv_clip=5.0)
    out.loss.backward()
    assert float(v_theta.grad.abs().max()) < 1e-6
    v_ref = v_old + 0.5
    v_theta.grad = None
    out = nft_loss(
        v_theta, v_old, x_t, x0, sigma, torch.zeros(1), beta=1.0, adv_clip=5.0,
        kl_beta=0.1, v_ref=v_ref,
    )  # fmt: skip
    out.loss.backward()
    assert float(out.kl) == pytest.approx(0.25)
    # v_theta - v_ref = -0.5: the gradient is negative, so descent raises v_theta toward v_ref
    torch.testing.assert_close(v_theta.grad, torch.full_like(v_old, -0.1 / v_old.numel()))


def test_bad_arguments_name_what_is_wrong():
    x0, _, sigma, x_t, v_old, adv = _batch(1.0)
    with pytest.raises(ValueError, match="beta"):
        nft_loss(v_old, v_old, x_t, x0, sigma, adv, beta=0.0, adv_clip=5.0)
    with pytest.raises(ValueError, match="share one shape"):
        nft_loss(v_old[..., :3], v_old, x_t, x0, sigma, adv, beta=1.0, adv_clip=5.0)
    with pytest.raises(ValueError, match="sigma"):
        nft_loss(v_old, v_old, x_t, x0, torch.ones(2), adv, beta=1.0, adv_clip=5.0)
    with pytest.raises(ValueError, match="v_ref"):
        nft_loss(v_old, v_old, x_t, x0, sigma, adv, beta=1.0, adv_clip=5.0, kl_beta=0.1)


def test_forward_noise_is_per_sample_and_stratified():
    sigma, noise = forward_noise((2, 3, 3), 4, seed=7, sample_indices=[0, 1, 2, 3])
    assert sigma.shape == (4, 4) and noise.shape == (4, 4, 2, 3, 3)
    strata = torch.arange(4) / 4
    assert bool(((sigma >= strata) & (sigma < strata + 0.25)).all())
    # a sample draws the same levels and noise whichever batch (worker) it is in
    part_sigma, part_noise = forward_noise((2, 3, 3), 4, seed=7, sample_indices=[2, 3])
    torch.testing.assert_close(part_sigma, sigma[2:])
    torch.testing.assert_close(part_noise, noise[2:])
    assert not torch.equal(forward_noise((2, 3, 3), 4, seed=8, sample_indices=[2])[1], noise[2:3])
    with pytest.raises(ValueError, match="draws"):
        forward_noise((2,), 0, seed=0, sample_indices=[0])


@pytest.mark.slow
def test_nft_update_moves_the_lora_only_for_samples_with_an_advantage():
    torch.manual_seed(0)
    pipe = load_pipeline(ModelConfig(kind="tiny", dtype="float32", tiny=TinyModelConfig()), "cpu")
    params = add_lora(pipe.transformer, LoraConfig(rank=4, alpha=8.0), seed=0)
    embeds = encode_prompts(pipe, ["a red circle"] * 4, max_sequence_length=16, guidance_scale=1)
    rollout = sample(
        pipe, embeds, num_steps=3, guidance_scale=1.0, noise_level=0.7, resolution=32,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    start = [p.detach().clone() for p in params]

    def update(advantages):
        with torch.no_grad():
            for p, s in zip(params, start, strict=True):
                p.copy_(s)
        cfg = TrainingConfig(optimizer_steps_per_epoch=2, lr=1e-3, policy_loss="nft")
        stats = nft_update(
            pipe.transformer, rollout, embeds, torch.tensor(advantages), torch.tensor([0, 1]),
            cfg=cfg, micro_batch_size=2, optimizer=torch.optim.AdamW(params, lr=1e-3),
            params=params, world_size=1, seed=3,
        )  # fmt: skip
        return stats, [p.detach().clone() for p in params]

    still, unchanged = update([0.0, 0.0, 0.0, 0.0])
    assert all(torch.equal(a, b) for a, b in zip(unchanged, start, strict=True))
    stats, moved = update([1.0, -1.0, 0.5, -0.5])
    assert any(not torch.equal(a, b) for a, b in zip(moved, start, strict=True))
    assert stats.grad_norm > 0 and stats.approx_kl > 0  # the second step sees a moved policy
    again, moved_again = update([1.0, -1.0, 0.5, -0.5])
    assert all(torch.equal(a, b) for a, b in zip(moved, moved_again, strict=True))
    assert again.loss == stats.loss
