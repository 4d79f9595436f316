"""Word-level tokenizers for the small pretrained model, built offline from the caption grammar.

The small model learns from captions of a closed grammar (:mod:`trainer.pretrain.scenes`), so
every word of it gets one token: a CLIP BPE whose merges spell each grammar word (other text
still tokenizes, one token per byte, as the tiny model's), and a T5 Unigram with one piece per
word. One token per word lets a few-million-parameter model learn what a word means within a
CPU pretraining budget. Both tokenizers are saved with the pipeline (``save_pretrained``), so
the model folder is self-contained.
"""

from __future__ import annotations

import string

from transformers import CLIPTokenizer, T5Tokenizer

from common.vocabulary import byte_level_clip_vocab
from trainer.pretrain.scenes import COLOURS, SHAPES, WORDS

__all__ = ["GRAMMAR_WORDS", "make_word_clip_tokenizer", "make_word_t5_tokenizer"]

GRAMMAR_WORDS = tuple(
    sorted(
        {"a", "an", "on", "background", "with", "the", "word"}
        | set(COLOURS)
        | set(SHAPES)
        | set(WORDS)
    )
)


def make_word_clip_tokenizer(max_length: int) -> CLIPTokenizer:
    """CLIP BPE: a token per byte plus one per (lower-cased) grammar word.

    CLIP lower-cases its input, so the words ``"SUN"`` and ``sun`` share a token. Merges are
    added until every grammar word encodes to one token: a word whose characters an earlier
    word's merges already grouped (``w or d``) gets the merges of that grouping.
    """
    vocab = byte_level_clip_vocab()
    merges: list[tuple[str, str]] = []
    words = sorted({w.lower() for w in GRAMMAR_WORDS})
    for _ in range(max(len(w) for w in words)):
        tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
        split = {w: tokenizer.tokenize(w) for w in words}
        if all(len(pieces) == 1 for pieces in split.values()):
            return tokenizer
        for pieces in split.values():
            if len(pieces) > 1:  # join the first two pieces; the next round joins the rest
                merges.append((pieces[0], pieces[1]))
                vocab.setdefault(pieces[0] + pieces[1], len(vocab))
    raise AssertionError("BPE merges did not converge to one token per grammar word")


def make_word_t5_tokenizer(max_length: int) -> T5Tokenizer:
    """T5 Unigram (pad 0, eos 1, unk 2): characters, plus a piece per grammar word.

    Words in quotes (``"SUN"``) are not preceded by the word-boundary mark, so each
    grammar word gets both pieces, ``\u2581SUN`` and ``SUN``.
    """
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    for c in string.ascii_letters + string.digits + string.punctuation:
        pieces += [(c, -8.0), ("\u2581" + c, -7.0)]
    for word in GRAMMAR_WORDS:
        pieces += [("\u2581" + word, -1.0), (word, -1.5)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)
