"""Coefficients-Preserving Sampling (``sampling.sde_type: cps``, Flow-CPS): the step's math, its
marginal, its deterministic last step, and a cps rollout on the tiny SD3 model."""

import math

import pytest
import torch

from tests.unit.test_model_rollout import STEPS
from tests.unit.test_sde_window import _sample
from trainer.config import load_config
from trainer.core.sde import cps_step_mean_std, sde_step
from trainer.model.rollout import Rollout, step_log_prob

SIGMA_MAX = 0.86  # any: cps does not use it


def _single_point_flow(sigma: float, n: int, seed: int = 0):
    """States of a flow whose data is one point ``x0``, and that flow's exact velocity."""
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(1, 16, generator=gen).expand(n, 16)
    eps = torch.randn(n, 16, generator=gen)
    x = (1.0 - sigma) * x0 + sigma * eps
    return x0, x, eps - x0


def test_zero_noise_is_the_euler_step():
    x, v = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    step = sde_step(x, v, 0.8, 0.5, sigma_max=SIGMA_MAX, noise_level=0.0, sde_type="cps")
    torch.testing.assert_close(step.sample, x + (0.5 - 0.8) * v)
    assert bool((step.log_prob == 0).all())


@pytest.mark.parametrize("noise_level", [0.3, 0.7, 1.0])
def test_the_sample_keeps_the_flows_coefficients(noise_level):
    # exact velocity of a one-point flow: x0_hat = x0 and x1_hat = the state's own noise, so
    # the next state must be (1 - s') x0 + s' * (unit normal): mean x0 (1 - s'), spread s'
    sigma, sigma_next, n = 0.6, 0.3, 20_000
    x0, x, v = _single_point_flow(sigma, n)
    gen = torch.Generator().manual_seed(1)
    step = sde_step(
        x, v, sigma, sigma_next, sigma_max=SIGMA_MAX, noise_level=noise_level,
        generator=gen, sde_type="cps",
    )  # fmt: skip
    noise_part = (step.sample - (1.0 - sigma_next) * x0) / sigma_next
    assert abs(float(noise_part.mean())) < 0.02
    assert abs(float(noise_part.std()) - 1.0) < 0.02


def test_flow_grpos_sde_leaves_excess_noise_at_few_steps():
    # the reason for cps: the 4-step schedule's third step (0.60 -> 0.009) of Flow-GRPO's SDE
    # leaves noise ~70x the flow's marginal at 0.009 (docs/learning-log.md)
    sigma, sigma_next, n = 0.602, 0.0089, 4_000
    x0, x, v = _single_point_flow(sigma, n)
    gen = torch.Generator().manual_seed(2)
    sde = sde_step(x, v, sigma, sigma_next, sigma_max=0.858, noise_level=0.7, generator=gen)
    cps = sde_step(
        x, v, sigma, sigma_next, sigma_max=0.858, noise_level=0.7, generator=gen, sde_type="cps"
    )
    sde_spread = float((sde.sample - (1 - sigma_next) * x0).std())
    cps_spread = float((cps.sample - (1 - sigma_next) * x0).std())
    assert sde_spread > 50 * sigma_next
    assert cps_spread == pytest.approx(sigma_next, rel=0.05)


def test_log_prob_is_the_gaussian_density_of_the_step():
    x, v, sigma, sigma_next, a = torch.randn(5, 3, 4), torch.randn(5, 3, 4), 0.9, 0.6, 0.7
    step = sde_step(
        x, v, sigma, sigma_next, sigma_max=SIGMA_MAX, noise_level=a,
        generator=torch.Generator().manual_seed(3), sde_type="cps",
    )  # fmt: skip
    std = sigma_next * math.sin(a * math.pi / 2)
    mean = (1 - sigma_next) * (x - sigma * v) + sigma_next * math.cos(a * math.pi / 2) * (
        x + (1 - sigma) * v
    )
    expected = torch.distributions.Normal(mean, std).log_prob(step.sample).mean(dim=(1, 2))
    torch.testing.assert_close(step.log_prob, expected)
    assert float(step.std) == pytest.approx(std)
    assert float(step.std_t) == pytest.approx(std)  # the KL's scale is the step's own
    rescored = sde_step(
        x, v, sigma, sigma_next, sigma_max=SIGMA_MAX, noise_level=a, prev_sample=step.sample,
        sde_type="cps",
    )  # fmt: skip
    torch.testing.assert_close(rescored.log_prob, step.log_prob)


def test_the_step_to_sigma_zero_is_deterministic_and_draws_no_noise():
    x, v = torch.randn(2, 6), torch.randn(2, 6)
    gen = torch.Generator().manual_seed(4)
    before = gen.get_state()
    step = sde_step(
        x, v, 0.4, 0.0, sigma_max=SIGMA_MAX, noise_level=0.7, generator=gen, sde_type="cps"
    )
    torch.testing.assert_close(step.sample, x - 0.4 * v)  # the predicted data, x0_hat
    assert bool((step.log_prob == 0).all())
    assert torch.equal(gen.get_state(), before)


def test_bad_settings_name_the_problem():
    x, v = torch.randn(2, 6), torch.randn(2, 6)
    with pytest.raises(ValueError, match=r"noise_level in \[0, 1\], got 1.5"):
        cps_step_mean_std(x, v, 0.8, 0.5, noise_level=1.5)
    with pytest.raises(ValueError, match="sigma_next must be smaller"):
        cps_step_mean_std(x, v, 0.5, 0.8)
    with pytest.raises(ValueError, match="unknown sde_type 'ddim'"):
        sde_step(x, v, 0.8, 0.5, sigma_max=SIGMA_MAX, sde_type="ddim")  # type: ignore[arg-type]


def test_config_keeps_the_last_step_out_of_training():
    cfg = load_config(
        "deploy/configs/local.yaml", ["sampling.sde_type=cps", "training.timestep_fraction=0.5"]
    )
    assert cfg.sampling.sde_type == "cps"
    with pytest.raises(ValueError, match="last of the 4 steps deterministic"):
        load_config(
            "deploy/configs/local.yaml", ["sampling.sde_type=cps", "training.timestep_fraction=1"]
        )
    with pytest.raises(ValueError, match=r"noise level is in \[0, 1\]"):
        load_config(
            "deploy/configs/local.yaml",
            ["sampling.sde_type=cps", "training.timestep_fraction=0.5", "sampling.noise_level=2"],
        )


def test_a_cps_rollout_records_its_type_and_rescores_exactly(pipe_and_embeds):
    pipe, embeds = pipe_and_embeds
    cps = _sample(pipe, embeds, sde_type="cps")
    assert cps.sde_type == "cps"
    assert bool((cps.log_probs[:, -1] == 0).all())  # the last step is deterministic
    assert bool((cps.log_probs[:, :-1] != 0).all())
    for j in range(STEPS - 1):
        again = step_log_prob(pipe.transformer, cps, j, embeds)
        torch.testing.assert_close(again.log_prob, cps.log_probs[:, j], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="goes to sigma 0 and is deterministic"):
        step_log_prob(pipe.transformer, cps, STEPS - 1, embeds)
    quick = _sample(pipe, embeds, sde_type="cps", sync_free=True)
    assert torch.equal(quick.latents, cps.latents)
    with pytest.raises(ValueError, match="SDE window or type"):
        Rollout.cat([cps, _sample(pipe, embeds)])


def test_the_rollout_noise_bench_reads_a_sampler_type_and_measures_grain():
    from bench.rollout_noise import grain, parse_settings

    assert parse_settings("4:0.7, 8:0.4:cps") == [(4, 0.7, "flow_grpo"), (8, 0.4, "cps")]
    with pytest.raises(SystemExit, match="'4:0.7:ddim' is not STEPS:NOISE"):
        parse_settings("4:0.7:ddim")
    flat = torch.ones(2, 4, 8, 8)
    assert grain(flat) == pytest.approx(0.0, abs=1e-6)
    white = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(5))
    assert grain(white) == pytest.approx(math.sqrt(8 / 9), rel=0.05)  # 1 - 1/9 of its variance
