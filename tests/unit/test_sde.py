"""The Flow-GRPO SDE step: log-prob, mean/std formulas, sampling, errors."""

import math

import pytest
import torch

from trainer.core.sde import gaussian_log_prob, sde_noise_level, sde_step, sde_step_mean_std


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_prob_equals_torch_normal(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 16, 8, 8, generator=gen, dtype=dtype)
    v = torch.randn(4, 16, 8, 8, generator=gen, dtype=dtype)
    sigma = torch.tensor([0.9, 0.7, 0.5, 0.3], dtype=dtype)
    step = sde_step(x, v, sigma, sigma - 0.1, sigma_max=0.97, noise_level=0.7, generator=gen)
    expected = torch.distributions.Normal(step.mean, step.std.expand_as(step.mean))
    expected_lp = expected.log_prob(step.sample).mean(dim=(1, 2, 3))
    assert step.log_prob.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(step.log_prob, expected_lp, atol=tol, rtol=tol)


def test_mean_and_std_follow_the_method_formulas():
    x = torch.full((1, 2), 2.0, dtype=torch.float64)
    v = torch.full((1, 2), -1.0, dtype=torch.float64)
    sigma, sigma_next, a = 0.6, 0.4, 0.7
    mean, std, std_t = sde_step_mean_std(x, v, sigma, sigma_next, sigma_max=0.99, noise_level=a)
    st = a * math.sqrt(sigma / (1 - sigma))
    dt = sigma_next - sigma
    want_mean = 2.0 * (1 + st**2 * dt / (2 * sigma)) - (1 + st**2 * (1 - sigma) / (2 * sigma)) * dt
    assert mean[0, 0].item() == pytest.approx(want_mean, rel=1e-12)
    assert std.item() == pytest.approx(st * math.sqrt(-dt), rel=1e-12)
    assert std_t.item() == pytest.approx(st, rel=1e-12)


def test_zero_noise_is_the_euler_ode_step():
    x, v = torch.randn(3, 5), torch.randn(3, 5)
    step = sde_step(x, v, 0.8, 0.5, sigma_max=0.99, noise_level=0.0)
    torch.testing.assert_close(step.sample, x + v * (0.5 - 0.8))
    assert torch.all(step.log_prob == 0)


def test_sigma_one_uses_sigma_max():
    sigma = torch.tensor([1.0, 0.5])
    std_t = sde_noise_level(sigma, sigma_max=0.95, noise_level=0.7)
    assert torch.isfinite(std_t).all()
    assert std_t[0].item() == pytest.approx(0.7 * math.sqrt(1.0 / (1 - 0.95)), rel=1e-6)


def test_sampled_noise_is_standard_normal():
    gen = torch.Generator().manual_seed(1)
    x = torch.zeros(2000, 8, dtype=torch.float64)
    step = sde_step(x, x.clone(), 0.5, 0.3, sigma_max=0.99, generator=gen)
    z = (step.sample - step.mean) / step.std
    assert abs(z.mean().item()) < 0.02
    assert abs(z.std().item() - 1.0) < 0.02


def test_same_generator_seed_reproduces_the_step():
    x, v = torch.randn(2, 4), torch.randn(2, 4)
    a = sde_step(x, v, 0.5, 0.3, sigma_max=0.99, generator=torch.Generator().manual_seed(7))
    b = sde_step(x, v, 0.5, 0.3, sigma_max=0.99, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.sample, b.sample)


def test_rescoring_a_recorded_sample_gives_its_log_prob_and_gradient_to_the_velocity():
    x = torch.randn(2, 4, dtype=torch.float64)
    v = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    drawn = sde_step(x, v.detach(), 0.5, 0.3, sigma_max=0.99)
    rescored = sde_step(x, v, 0.5, 0.3, sigma_max=0.99, prev_sample=drawn.sample)
    torch.testing.assert_close(rescored.log_prob.detach(), drawn.log_prob)
    rescored.log_prob.sum().backward()
    assert v.grad is not None and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0


def test_bad_inputs_are_rejected():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="must match"):
        sde_step_mean_std(x, torch.zeros(2, 4), 0.5, 0.3, sigma_max=0.99)
    with pytest.raises(ValueError, match="smaller than sigma"):
        sde_step_mean_std(x, x, 0.3, 0.5, sigma_max=0.99)
    with pytest.raises(ValueError, match="scalar or a \\[batch\\]"):
        sde_step_mean_std(x, x, torch.tensor([0.5, 0.4, 0.3]), 0.2, sigma_max=0.99)


def test_gaussian_log_prob_treats_sample_as_data():
    sample = torch.randn(3, 2, requires_grad=True)
    mean = torch.zeros(3, 2, requires_grad=True)
    lp = gaussian_log_prob(sample, mean, torch.tensor(1.0))
    lp.sum().backward()
    assert sample.grad is None
    assert mean.grad is not None


def test_per_sample_generators_make_noise_independent_of_the_batch():
    x, v = torch.zeros(3, 4), torch.zeros(3, 4)
    gens = [torch.Generator().manual_seed(s) for s in (10, 11, 12)]
    full = sde_step(x, v, 0.5, 0.3, sigma_max=0.99, generator=gens)
    alone = sde_step(
        x[1:2], v[1:2], 0.5, 0.3, sigma_max=0.99, generator=[torch.Generator().manual_seed(11)]
    )
    torch.testing.assert_close(full.sample[1:2], alone.sample)
    with pytest.raises(ValueError, match="3 generators for a batch of 2"):
        sde_step(x[:2], v[:2], 0.5, 0.3, sigma_max=0.99, generator=gens)
