"""The ``ocr`` reward: does the image show the text quoted in the prompt? (Flow-GRPO's OCR reward)

Definition, as in Flow-GRPO's ``flow_grpo/ocr.py``:

1. target = the text between the prompt's first pair of straight double quotes ``"``;
2. recognized = the OCR engine's text lines, in reading order, joined with no separator, keeping
   the lines whose confidence is ``>= min_confidence`` (and ``> 0``);
3. both are lower-cased and stripped of all whitespace;
4. dist = 0 if target is a substring of recognized, else the Levenshtein distance between them;
5. reward = ``1 - min(dist, len(target)) / len(target)``, in [0, 1].

Where this file decides differently from Flow-GRPO, it returns ``None`` ("could not score")
instead of crashing or inventing a 0: a prompt without a quoted target, an empty target, and an
engine error on one image; ``unscored_reason`` then says which of these it was (e.g. the prompt
has no straight double quotes). An image on which the engine reads nothing is a real score (0.0).

``variant`` (tiny/pretrained), ``dtype``, ``batch_size`` and ``seed`` do not apply: the real
PP-OCR ONNX models ship inside the rapidocr wheel, so every variant runs the real engine, and
images are read one at a time.

The engines (:mod:`services.rewards.ocr.engines`) are this reward's own; the package holds both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field
from rapidfuzz.distance import Levenshtein

from services.rewards.base import Image, ModelInfo, RewardConfig, RewardModel, register
from services.rewards.ocr.engines import (
    DetLimitType,
    OcrEngine,
    OnnxOcrEngine,
    PaddleOcrEngine,
    TextLine,
)

logger = logging.getLogger(__name__)

QUOTE = '"'  # only the straight ASCII quote delimits a target, as in Flow-GRPO
CURLY_QUOTES = "\u201c\u201d\u201e\u00ab\u00bb"  # look like quotes, never delimit a target
EXAMPLE = 'e.g. a sign that says "OPEN"'


class OcrConfig(RewardConfig):
    """Parameters of the ``ocr`` reward; the engine options apply to the engine named."""

    engine: Literal["onnx", "paddle"] = Field(
        "onnx",
        description="onnx: rapidocr, offline, models in its wheel; paddle: PaddleOCR, which "
        "needs its own runtime_env with the 'paddle' extra and downloads models at first use",
    )
    min_confidence: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="lines recognized with a lower confidence are ignored; 0.5 is the "
        "drop_score PaddleOCR 2.x applied inside Flow-GRPO's reward",
    )
    det_limit_type: DetLimitType = Field(
        "max", description="max: shrink images whose longer side exceeds det_limit_side_len"
    )
    det_limit_side_len: int = Field(960, ge=32, description="detector resize limit in pixels")
    use_angle_cls: bool = Field(
        False, description="rotate upside-down text lines first (Flow-GRPO: off)"
    )
    paddle_lang: str = Field(
        "en",
        description="PaddleOCR recognition language (paddle engine only; the onnx engine's "
        "PP-OCRv6 models read Chinese and English)",
    )
    num_threads: int = Field(
        0, ge=0, description="onnxruntime intra-op threads (onnx engine only); 0: its default"
    )


def normalize_text(text: str) -> str:
    """Lower-case ``text`` and drop every whitespace character, as both sides are compared."""
    return "".join(text.split()).lower()


def extract_target(prompt: str | None) -> str | None:
    """The normalized text inside the prompt's first pair of ``"``; ``None`` if there is none.

    A prompt with no quote, a single unmatched quote, or an empty/blank quoted string has no
    target and cannot be scored.
    """
    if prompt is None:
        return None
    start = prompt.find(QUOTE)
    end = prompt.find(QUOTE, start + 1) if start >= 0 else -1
    if end < 0:
        return None
    return normalize_text(prompt[start + 1 : end]) or None


def target_problem(prompt: str | None) -> str | None:
    """Why ``extract_target(prompt)`` finds no text to read, in words; ``None`` if it finds one."""
    if extract_target(prompt) is not None:
        return None
    if prompt is None:
        return f"no prompt: the OCR reward reads the text to find from the prompt ({EXAMPLE})"
    count = prompt.count(QUOTE)
    if count == 0 and any(c in prompt for c in CURLY_QUOTES):
        return (
            'prompt names no text to read: only straight double quotes (") mark it, not '
            f"curly ones ({EXAMPLE})"
        )
    if count == 0:
        return (
            "prompt names no text to read: expected the text between straight double quotes "
            f"({EXAMPLE})"
        )
    if count == 1:
        return f"prompt has one double quote and no closing one around the text to read ({EXAMPLE})"
    return f"prompt quotes empty text: put the text to read between the double quotes ({EXAMPLE})"


def join_lines(lines: Iterable[TextLine], min_confidence: float) -> str:
    """Concatenate the text of the lines confident enough, with no separator, normalized."""
    return normalize_text(
        "".join(text for text, conf in lines if conf > 0 and conf >= min_confidence)
    )


def ocr_distance(target: str, recognized: str) -> int:
    """0 if ``target`` occurs in ``recognized``, else their Levenshtein distance (normalized)."""
    target, recognized = normalize_text(target), normalize_text(recognized)
    if target in recognized:
        return 0
    return int(Levenshtein.distance(recognized, target))


def ocr_reward(target: str, recognized: str) -> float:
    """``1 - min(dist, len(target)) / len(target)``; ``target`` must be non-empty."""
    target = normalize_text(target)
    if not target:
        raise ValueError("the OCR target is empty")
    dist = ocr_distance(target, recognized)
    return 1.0 - min(dist, len(target)) / len(target)


def build_engine(config: OcrConfig) -> OcrEngine:
    """The engine that ``config.engine`` names, configured from ``config`` (not yet loaded)."""
    if config.engine == "paddle":
        return PaddleOcrEngine(
            lang=config.paddle_lang,
            det_limit_type=config.det_limit_type,
            det_limit_side_len=config.det_limit_side_len,
            use_angle_cls=config.use_angle_cls,
            device=config.device,
        )
    return OnnxOcrEngine(
        det_limit_type=config.det_limit_type,
        det_limit_side_len=config.det_limit_side_len,
        use_angle_cls=config.use_angle_cls,
        num_threads=config.num_threads,
        device=config.device,
    )


@register
class OcrReward(RewardModel):
    """Flow-GRPO's OCR reward: how closely the text read in the image matches the quoted text."""

    name: ClassVar[str] = "ocr"
    Config: ClassVar[type[RewardConfig]] = OcrConfig
    needs_prompt: ClassVar[bool] = True
    description: ClassVar[str] = (
        "1 - normalized edit distance between the prompt's quoted text and the OCR'd text"
    )

    def __init__(self, config: OcrConfig, engine: OcrEngine | None = None):
        """``engine`` replaces the one ``config.engine`` names (tests, custom engines)."""
        super().__init__(config)
        self.engine: OcrEngine = engine if engine is not None else build_engine(config)

    def model_info(self) -> ModelInfo:
        """The engine and its models; every variant runs real weights."""
        return ModelInfo(self.engine.description)

    def unscored_reason(self, prompt: str | None) -> str:
        """What the prompt lacks, or that the engine failed on the image."""
        return target_problem(prompt) or (
            f"the OCR engine failed on this image ({type(self.engine).__name__}; "
            "the replica's log has the error)"
        )

    def load(self) -> None:
        """Load the OCR engine's models once per replica."""
        self.engine.load()
        self.loaded = True

    def score(self, images: Sequence[Image], prompts: Sequence[str | None]) -> list[float | None]:
        """One reward per image; ``None`` without a quoted target or when the engine fails."""
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
        if not self.loaded:
            raise RuntimeError(f"reward {self.name!r} is not loaded; call load() first")
        rewards: list[float | None] = []
        for index, (image, prompt) in enumerate(zip(images, prompts, strict=True)):
            target = extract_target(prompt)
            if target is None:  # nothing to compare with: skip the OCR cost too
                rewards.append(None)
                continue
            try:
                lines = self.engine.read(image)
            except Exception as exc:  # one bad image must not sink the whole batch
                logger.warning(
                    "reward %r: OCR engine %s failed on image %d of %d, scored None: %s: %s",
                    self.name,
                    type(self.engine).__name__,
                    index,
                    len(images),
                    type(exc).__name__,
                    exc,
                    exc_info=logger.isEnabledFor(logging.DEBUG),
                )
                rewards.append(None)
                continue
            rewards.append(ocr_reward(target, join_lines(lines, self.config.min_confidence)))
        return rewards

    def health_check(self) -> None:
        """The base probe, plus a direct engine call: ``score()`` would hide its errors as None."""
        super().health_check()
        self.engine.read(np.full((32, 32, 3), 127, dtype=np.uint8))
