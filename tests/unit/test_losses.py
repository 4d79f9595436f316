"""PPO-clip loss and the KL term of Flow-GRPO."""

import pytest
import torch

from trainer.core.losses import flow_grpo_loss, kl_to_reference, ppo_clip_loss


def test_at_ratio_one_the_loss_is_minus_mean_advantage():
    lp = torch.tensor([0.1, -0.2, 0.3])
    adv = torch.tensor([1.0, -2.0, 0.5])
    loss, clip_frac = ppo_clip_loss(lp, lp.clone(), adv, clip_range=0.2)
    assert loss.item() == pytest.approx(-adv.mean().item())
    assert clip_frac.item() == 0.0


def test_clipping_stops_the_gradient_past_the_trust_region():
    old = torch.zeros(2)
    new = torch.tensor([0.5, -0.5], requires_grad=True)  # ratios e^0.5 > 1.2 and e^-0.5 < 0.8
    adv = torch.tensor([1.0, -1.0])  # both would push the ratio further out
    loss, clip_frac = ppo_clip_loss(new, old, adv, clip_range=0.2)
    loss.backward()
    assert torch.all(new.grad == 0)
    assert clip_frac.item() == 1.0


def test_gradient_inside_the_trust_region_follows_the_advantage():
    old = torch.zeros(2)
    new = torch.zeros(2, requires_grad=True)
    adv = torch.tensor([1.0, -1.0])
    loss, _ = ppo_clip_loss(new, old, adv, clip_range=0.2)
    loss.backward()
    assert new.grad[0] < 0 < new.grad[1]  # descent raises logp of the positive advantage


def test_kl_matches_the_gaussian_kl():
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 4, 2, generator=gen, dtype=torch.float64)
    ref = torch.randn(3, 4, 2, generator=gen, dtype=torch.float64)
    std = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64).view(3, 1, 1)
    kl = kl_to_reference(mean, ref, std)
    want = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, std.expand_as(mean)),
        torch.distributions.Normal(ref, std.expand_as(ref)),
    ).mean(dim=(1, 2))
    torch.testing.assert_close(kl, want)
    assert torch.all(kl_to_reference(mean, mean, std) == 0)


def test_flow_grpo_loss_adds_beta_times_kl():
    lp = torch.zeros(2)
    adv = torch.tensor([1.0, -1.0])
    mean, ref, std = torch.ones(2, 3), torch.zeros(2, 3), torch.tensor(1.0)
    out = flow_grpo_loss(lp, lp, adv, clip_range=0.1, kl_beta=0.5, mean=mean, mean_ref=ref, std=std)
    assert out.kl.item() == pytest.approx(0.5)
    assert out.loss.item() == pytest.approx(out.policy_loss.item() + 0.5 * 0.5)
    with pytest.raises(ValueError, match="kl_beta > 0 needs"):
        flow_grpo_loss(lp, lp, adv, clip_range=0.1, kl_beta=0.1)


def test_shape_and_clip_range_errors():
    with pytest.raises(ValueError, match="share one shape"):
        ppo_clip_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2), 0.1)
    with pytest.raises(ValueError, match="clip_range"):
        ppo_clip_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), 0.0)
