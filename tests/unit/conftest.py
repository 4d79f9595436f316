"""Fixtures shared by several unit-test modules."""

import pytest
import torch

from tests.unit.test_model_rollout import CFG, PROMPTS, SEQ, TINY
from trainer.model.pipeline import load_pipeline
from trainer.model.rollout import encode_prompts


@pytest.fixture(scope="module")
def pipe_and_embeds():
    """The tiny in-code SD3 pipeline and its embeddings of ``PROMPTS``, on one torch thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    pipe = load_pipeline(TINY, "cpu")
    embeds = encode_prompts(pipe, PROMPTS, max_sequence_length=SEQ, guidance_scale=CFG)
    yield pipe, embeds
    torch.set_num_threads(before)
