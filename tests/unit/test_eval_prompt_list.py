"""Which prompts an evaluation samples: the first N, repeated for several images per prompt."""

import pytest
import torch

from trainer.config import EvaluationConfig
from trainer.loop.evaluation import EVAL_EPOCH_TAG, eval_prompt_list
from trainer.loop.rollout_phase import sample_generators

PROMPTS = ["a red circle", "a blue square", "a green star", "a black cross"]


def test_one_image_per_prompt_is_the_first_n_prompts():
    assert eval_prompt_list(PROMPTS, None, 1) == PROMPTS
    assert eval_prompt_list(PROMPTS, 2, 1) == PROMPTS[:2]


def test_several_images_repeat_the_list_so_the_first_pass_is_unchanged():
    repeated = eval_prompt_list(PROMPTS, 3, 2)
    assert repeated == PROMPTS[:3] + PROMPTS[:3]
    assert repeated[:3] == eval_prompt_list(PROMPTS, 3, 1)


def test_each_repeat_draws_its_own_noise_and_the_first_pass_keeps_its_own():
    """The sample index seeds the noise: index i + N (a repeat of prompt i) differs from i,
    and indices 0..N-1 are the same generators as an evaluation with one image per prompt."""
    n = 3
    gens = sample_generators(0, EVAL_EPOCH_TAG, range(2 * n))
    draws = [torch.randn(4, generator=g) for g in gens]
    single = [torch.randn(4, generator=g) for g in sample_generators(0, EVAL_EPOCH_TAG, range(n))]
    for i in range(n):
        assert torch.equal(draws[i], single[i])
        assert not torch.allclose(draws[i], draws[i + n])


def test_config_default_is_one_and_rejects_zero():
    assert EvaluationConfig().images_per_prompt == 1
    with pytest.raises(ValueError, match="images_per_prompt"):
        EvaluationConfig(images_per_prompt=0)
