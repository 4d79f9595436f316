"""The SDE window (``sampling.sde_window``, MixGRPO / Flow-GRPO-Fast): noise and training on a
few consecutive steps, the deterministic ODE step everywhere else."""

import pytest
import torch

from tests.unit.test_model_rollout import CFG, NOISE, RES, STEPS
from trainer.config import load_config
from trainer.model.rollout import (
    Rollout,
    sample,
    sde_window_steps,
    step_log_prob,
)


def _sample(pipe, embeds, seed=0, **kw):
    args = dict(num_steps=STEPS, guidance_scale=CFG, noise_level=NOISE, resolution=RES)
    return sample(pipe, embeds, generator=torch.Generator().manual_seed(seed), **(args | kw))


def test_only_the_window_draws_noise_and_has_log_probs(pipe_and_embeds):
    pipe, embeds = pipe_and_embeds
    ode = _sample(pipe, embeds, noise_level=0.0)
    windowed = _sample(pipe, embeds, sde_steps=[1, 2])
    assert windowed.sde_steps == (1, 2)
    # before the window the trajectory is the ODE's, from the same initial noise
    torch.testing.assert_close(windowed.latents[:, :2], ode.latents[:, :2])
    assert not torch.allclose(windowed.latents[:, 3], ode.latents[:, 3])
    assert bool((windowed.log_probs[:, [0, 3]] == 0).all())
    assert bool((windowed.log_probs[:, [1, 2]] != 0).all())
    # a window step's log-prob is recomputed exactly from the recorded states
    last = step_log_prob(pipe.transformer, windowed, 2, embeds)
    torch.testing.assert_close(last.log_prob, windowed.log_probs[:, 2], atol=1e-4, rtol=0)
    # a different seed changes the window's noise only
    other = _sample(pipe, embeds, seed=1, sde_steps=[1, 2])
    assert not torch.allclose(other.latents[:, 2], windowed.latents[:, 2])


def test_the_sync_free_sampler_draws_the_same_window_noise(pipe_and_embeds):
    pipe, embeds = pipe_and_embeds
    plain = _sample(pipe, embeds, sde_steps=[0, 2])
    quick = _sample(pipe, embeds, sde_steps=[0, 2], sync_free=True)
    assert torch.equal(plain.latents, quick.latents)
    assert torch.equal(plain.log_probs, quick.log_probs)


def test_a_step_outside_the_window_cannot_be_trained(pipe_and_embeds):
    pipe, embeds = pipe_and_embeds
    windowed = _sample(pipe, embeds, sde_steps=[1])
    with pytest.raises(ValueError, match=r"steps \[0\] were ODE steps"):
        step_log_prob(pipe.transformer, windowed, 0, embeds)
    with pytest.raises(ValueError, match=r"steps \[3\] were ODE steps"):
        step_log_prob(pipe.transformer, windowed, torch.tensor([1, 3, 1, 1]), embeds)
    with pytest.raises(ValueError, match="outside the sampler's steps"):
        _sample(pipe, embeds, sde_steps=[4])
    with pytest.raises(ValueError, match="SDE window"):
        Rollout.cat([windowed, _sample(pipe, embeds, sde_steps=[2])])


def test_the_window_is_consecutive_and_covers_every_trained_step():
    starts = set()
    for epoch in range(60):
        window = sde_window_steps(3, 2, torch.Generator().manual_seed(epoch))
        assert window.tolist() == list(range(int(window[0]), int(window[0]) + 2))
        starts.add(int(window[0]))
    assert starts == {0, 1}
    assert sde_window_steps(3, 3).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="window must be in"):
        sde_window_steps(3, 4)


def test_config_rejects_a_window_wider_than_the_trained_steps():
    three = ["sampling.sde_type=flow_grpo", "training.timestep_fraction=0.75"]
    load_config("deploy/configs/local.yaml", [*three, "sampling.sde_window=3"])
    with pytest.raises(ValueError, match="sde_window = 4 exceeds the 3 trained steps"):
        load_config("deploy/configs/local.yaml", [*three, "sampling.sde_window=4"])
    with pytest.raises(ValueError, match="sde_window = 3 exceeds the 2 trained steps"):
        load_config("deploy/configs/local.yaml", ["sampling.sde_window=3"])  # make train: 2
