"""PickScore reward: CLIP-H fine-tuned on Pick-a-Pic human preferences (Kirstain et al. 2023).

Matches Flow-GRPO's ``PickScoreScorer``: the ``yuvalkirstain/PickScore_v1`` weights with the
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` tokenizer and preprocessing, L2-normalized
embeddings, ``logit_scale.exp() * cos(text, image)`` (PickScore's own reference), divided by
26 so that typical scores land near 0.8-0.9.
"""

from __future__ import annotations

from pydantic import Field

from services.rewards._clip import ClipSimilarityConfig, ClipSimilarityReward
from services.rewards.base import register


class PickScoreConfig(ClipSimilarityConfig):
    """PickScore checkpoint, processor and Flow-GRPO scale."""

    model: str = Field("yuvalkirstain/PickScore_v1", description="Hub id or local dir")
    processor: str | None = Field(
        "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        description="tokenizer + preprocessor config source (PickScore ships none of its own)",
    )
    scale: float = Field(26.0, gt=0, description="Flow-GRPO divides PickScore by 26")


@register
class PickScore(ClipSimilarityReward):
    """PickScore / 26; ``None`` for an image without a prompt."""

    name = "pickscore"
    Config = PickScoreConfig
    description = "PickScore_v1 text-image preference score / 26 (Flow-GRPO scale)"
