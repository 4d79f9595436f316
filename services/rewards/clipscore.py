"""CLIP score reward: text-image cosine similarity of OpenAI CLIP ViT-L/14.

Matches Flow-GRPO's ``clip_scorer.ClipScorer``: ``outputs.logits_per_image.diagonal() / 30``,
i.e. ``logit_scale.exp() * cos(text, image) / 30`` = ``100 * cos / 30`` for
``openai/clip-vit-large-patch14`` (no clamp at 0). This is not Hessel et al.'s CLIPScore
``2.5 * max(cos, 0)``; the Flow-GRPO scale is kept so rewards and hyper-parameters transfer.
One deviation: Flow-GRPO resizes float tensors with torchvision (bilinear); here PIL bicubic,
as in the checkpoint's ``preprocessor_config.json`` (CLIP's training preprocessing).
"""

from __future__ import annotations

from pydantic import Field

from services.rewards._clip import ClipSimilarityConfig, ClipSimilarityReward
from services.rewards.base import register


class ClipScoreConfig(ClipSimilarityConfig):
    """CLIP checkpoint and Flow-GRPO scale."""

    model: str = Field("openai/clip-vit-large-patch14", description="Hub id or local dir")
    scale: float = Field(30.0, gt=0, description="Flow-GRPO divides CLIP logits by 30")


@register
class ClipScore(ClipSimilarityReward):
    """CLIP ViT-L/14 ``100 * cos / 30``; ``None`` for an image without a prompt."""

    name = "clipscore"
    Config = ClipScoreConfig
    description = "CLIP ViT-L/14 text-image similarity, logit_scale * cos / 30 (Flow-GRPO scale)"
