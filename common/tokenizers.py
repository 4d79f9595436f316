"""Offline tokenizers built in code: the tiny models' and tests' stand-ins for a download.

:func:`clip_tokenizer` is a real ``CLIPTokenizer`` (byte-level BPE with no merges, so one token
per character; bos/eos added, eos used as pad, ``</w>`` word ends) over
:func:`common.vocabulary.byte_level_clip_vocab`: the tiny reward CLIPs (``services.rewards``)
and the tiny SD3 (``trainer.model.tiny``) run the same tokenization code path as the
pretrained ones. :func:`t5_tokenizer` is a small in-memory T5 Unigram tokenizer for the tiny
SD3's third text encoder. ``transformers`` is imported only when one is built.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING

from common.vocabulary import byte_level_clip_vocab

if TYPE_CHECKING:
    from transformers import CLIPTokenizer, T5Tokenizer

__all__ = ["CLIP_MAX_LENGTH", "clip_tokenizer", "t5_tokenizer"]

CLIP_MAX_LENGTH = 77  # CLIP's text positions; SD3 pads every CLIP prompt to 77 tokens
_T5_WORDS = ("a", "an", "the", "of", "on", "in", "with", "photo", "cat", "dog", "sign", "text")


def clip_tokenizer(max_length: int = CLIP_MAX_LENGTH) -> CLIPTokenizer:
    """A valid CLIP tokenizer without a download: byte-level BPE, no merges (a token per byte)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=byte_level_clip_vocab(), merges=[], model_max_length=max_length)


def t5_tokenizer(max_length: int = 512) -> T5Tokenizer:
    """A small in-memory T5 Unigram tokenizer (pad 0, eos 1, unk 2, as T5's own)."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    for c in string.ascii_letters + string.digits + string.punctuation:
        pieces += [(c, -5.0), ("\u2581" + c, -4.0)]
    pieces += [("\u2581" + w, -1.0) for w in _T5_WORDS if "\u2581" + w not in dict(pieces)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)
