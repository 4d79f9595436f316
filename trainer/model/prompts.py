"""SD3 prompt conditioning for the sampler and the training pass.

Prompts are encoded once per rollout batch, without grad (the text encoders are frozen), and
the same :class:`PromptEmbeds` rows are reused by every recomputed step of those samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from diffusers import StableDiffusion3Pipeline

__all__ = ["Index", "PromptEmbeds", "encode_prompts"]

Index = int | slice | list[int] | torch.Tensor


@dataclass(frozen=True)
class PromptEmbeds:
    """SD3 conditioning for a batch of prompts; the negatives (empty prompt) exist for CFG."""

    prompt_embeds: torch.Tensor  # [B, 77 + max_sequence_length, joint_attention_dim]
    pooled_prompt_embeds: torch.Tensor  # [B, 2 x clip projection dim]
    negative_prompt_embeds: torch.Tensor | None = None  # same shapes, for guidance_scale > 1
    negative_pooled_prompt_embeds: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.prompt_embeds.shape[0]

    @property
    def has_negative(self) -> bool:
        """Whether the unconditional embeddings needed by CFG are present."""
        return self.negative_prompt_embeds is not None

    def select(self, index: Index) -> PromptEmbeds:
        """The rows ``index`` (a micro-batch or a permutation), every field alike.

        An int keeps the batch dimension (a batch of one).
        """
        index = [index] if isinstance(index, int) else index
        return _map(self, lambda t: t[index])

    def to(self, device: torch.device | str) -> PromptEmbeds:
        """A copy on ``device``."""
        return _map(self, lambda t: t.to(device))

    @classmethod
    def cat(cls, parts: list[PromptEmbeds]) -> PromptEmbeds:
        """Concatenate the rows of several batches (all with negatives, or none)."""
        if not parts or len({p.has_negative for p in parts}) != 1:
            raise ValueError("need at least one part, all with negatives or all without")
        names = [f.name for f in fields(cls)]
        cols = {n: [getattr(p, n) for p in parts] for n in names}
        return cls(**{n: None if c[0] is None else torch.cat(c) for n, c in cols.items()})


def _map(embeds: PromptEmbeds, fn: Callable[[torch.Tensor], torch.Tensor]) -> PromptEmbeds:
    values = {f.name: getattr(embeds, f.name) for f in fields(embeds)}
    return PromptEmbeds(**{k: None if v is None else fn(v) for k, v in values.items()})


@torch.no_grad()
def encode_prompts(
    pipe: StableDiffusion3Pipeline,
    prompts: list[str],
    *,
    max_sequence_length: int,
    guidance_scale: float,
) -> PromptEmbeds:
    """Encode prompts with SD3's three text encoders (``pipe.encode_prompt``), without grad.

    With ``guidance_scale > 1`` the negative is the empty prompt, as in SD3 and Flow-GRPO; it is
    encoded once and repeated for each row.
    """
    if not prompts:
        raise ValueError("no prompts to encode")
    common = dict(device=pipe.device, do_classifier_free_guidance=False)
    pe, _, pooled, _ = pipe.encode_prompt(
        list(prompts), None, None, max_sequence_length=max_sequence_length, **common
    )
    if guidance_scale <= 1:
        return PromptEmbeds(pe, pooled)
    neg, _, neg_pooled, _ = pipe.encode_prompt(
        [""], None, None, max_sequence_length=max_sequence_length, **common
    )
    n = len(prompts)
    return PromptEmbeds(pe, pooled, neg.repeat(n, 1, 1), neg_pooled.repeat(n, 1))
