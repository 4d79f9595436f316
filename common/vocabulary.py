"""Shared vocabularies: the scene colour table and CLIP's byte-level base vocabulary.

:data:`COLOURS` is what the pretraining scenes draw with (``trainer.pretrain.scenes``) and what
the ``prompt_alignment`` reward checks from the pixels, so a caption's colour name means one
sRGB value on both sides. :func:`byte_level_clip_vocab` is the base of every offline CLIP
tokenizer: the tiny reward CLIPs, the tiny SD3 and the small pretrained model's word tokenizer.
"""

from __future__ import annotations

__all__ = ["COLOURS", "byte_level_clip_vocab"]

# sRGB of every colour name the scene captions use; far apart so a named colour is checkable
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}


def byte_level_clip_vocab() -> dict[str, int]:
    """CLIP's byte-level BPE base vocabulary, without merges.

    Ids 0 and 1 are ``<|startoftext|>`` and ``<|endoftext|>`` (the latter doubles as pad, as in
    CLIP); then the 256 byte symbols, then the same symbols with the end-of-word marker.
    """
    from tokenizers.pre_tokenizers import ByteLevel

    chars = sorted(ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    return vocab
