"""``sampling.lora_min_sigma``: the LoRA acts only on steps that start at or above a sigma; the
base model draws the rest, in rollouts and evaluation. Checked on the tiny SD3 model."""

import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer

import trainer.model.rollout as rollout_module
from tests.unit.test_sde_window import _sample
from trainer.config import load_config
from trainer.loop.worker import check_lora_min_sigma
from trainer.model.pipeline import add_lora, lora_parameters
from trainer.model.rollout import make_schedule

RANDOM_CONFIG = "deploy/configs/local-random.yaml"
SCHEDULE = ["sampling.num_steps=4", "sampling.resolution=64", "training.timestep_fraction=0.5"]


@pytest.fixture(scope="module")
def adapted(pipe_and_embeds):
    """The tiny pipeline with a LoRA whose B is not zero, so that it changes the velocity."""
    pipe, embeds = pipe_and_embeds
    cfg = load_config(RANDOM_CONFIG, [])
    add_lora(pipe.transformer, cfg.lora, seed=0)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in lora_parameters(pipe.transformer):
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return pipe, embeds


def _first_lora_layer(transformer):
    return next(m for m in transformer.modules() if isinstance(m, BaseTunerLayer))


def _adapter_on_per_step(monkeypatch, pipe, embeds, lora_min_sigma):
    """Sample once, recording whether the adapter was on at each velocity call."""
    seen, velocity = [], rollout_module.velocity

    def recording(transformer, *args, **kw):
        seen.append(not _first_lora_layer(transformer).disable_adapters)
        return velocity(transformer, *args, **kw)

    monkeypatch.setattr(rollout_module, "velocity", recording)
    result = _sample(pipe, embeds, lora_min_sigma=lora_min_sigma)
    monkeypatch.setattr(rollout_module, "velocity", velocity)
    return seen, result


@pytest.mark.parametrize("floor", [0.0, 0.5, 0.9, 1.0])
def test_the_lora_is_off_exactly_on_the_steps_below_the_floor(adapted, monkeypatch, floor):
    pipe, embeds = adapted
    seen, result = _adapter_on_per_step(monkeypatch, pipe, embeds, floor)
    sigmas = [float(s) for s in result.sigmas[:-1]]
    assert seen == [floor == 0 or s >= floor for s in sigmas]
    assert any(seen) and (floor == 0 or not all(seen))  # the floors split this schedule
    assert not _first_lora_layer(pipe.transformer).disable_adapters  # back on after the rollout


def test_the_steps_above_the_floor_are_the_adapted_models(adapted):
    pipe, embeds = adapted
    full, gated = _sample(pipe, embeds), _sample(pipe, embeds, lora_min_sigma=0.5)
    above = sum(float(s) >= 0.5 for s in full.sigmas[:-1])
    # the states the adapted steps produce are the same; the base model's steps differ
    torch.testing.assert_close(gated.latents[:, : above + 1], full.latents[:, : above + 1])
    assert not torch.allclose(gated.latents[:, -1], full.latents[:, -1])
    # a floor of 0 is the plain sampler
    torch.testing.assert_close(_sample(pipe, embeds, lora_min_sigma=0.0).latents, full.latents)


def test_the_floor_must_not_switch_off_a_trained_step(pipe_and_embeds):
    pipe, _ = pipe_and_embeds
    _, sigmas = make_schedule(pipe, 4, 64)
    last_trained = float(sigmas[1])  # timestep_fraction 0.5 of 4 steps: steps 0 and 1
    ok = load_config(RANDOM_CONFIG, [*SCHEDULE, f"sampling.lora_min_sigma={last_trained - 0.01}"])
    check_lora_min_sigma(pipe, ok)
    bad = load_config(RANDOM_CONFIG, [*SCHEDULE, f"sampling.lora_min_sigma={last_trained + 0.01}"])
    with pytest.raises(ValueError, match="lora_min_sigma.*last trained step"):
        check_lora_min_sigma(pipe, bad)


def test_config_refuses_the_floor_with_a_merged_lora():
    with pytest.raises(ValueError, match="merge_lora_for_rollouts=false"):
        load_config(
            RANDOM_CONFIG,
            ["sampling.lora_min_sigma=0.5", "performance.merge_lora_for_rollouts=true"],
        )
