"""The ``ocr`` reward: target extraction, the Flow-GRPO formula, PaddleOCR result parsing, and
real OCR (rapidocr, models from its wheel) on text rendered with a TrueType font."""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from services.rewards.base import build_reward
from services.rewards.ocr import (
    OcrReward,
    extract_target,
    join_lines,
    normalize_text,
    ocr_distance,
    ocr_reward,
    target_problem,
)
from services.rewards.ocr.engines import (
    ONNX_MODELS,
    OnnxOcrEngine,
    PaddleOcrEngine,
    parse_paddle_result,
    rgb_to_bgr,
)
from tests.rendering import render

# --- target extraction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "target"),
    [
        ('A sign that says "OPEN"', "open"),
        ('a "first" and a "second"', "first"),
        ('neon "Hello World" at night', "helloworld"),
        ('"  Apex\t2026 "', "apex2026"),
        ('mixed CaSe "CoFFee"', "coffee"),
        ("no quotes at all", None),
        ('one unmatched " quote', None),
        ('empty "" quotes', None),
        ('blank "   " quotes', None),
        ("curly \u201cOPEN\u201d quotes", None),  # only straight quotes count, as in Flow-GRPO
        (None, None),
    ],
)
def test_extract_target(prompt, target):
    assert extract_target(prompt) == target


@pytest.mark.parametrize(
    ("prompt", "words"),
    [
        ("no quotes at all", "prompt names no text to read: expected the text between straight"),
        ("curly \u201cOPEN\u201d quotes", 'only straight double quotes (") mark it'),
        ('one unmatched " quote', "one double quote and no closing one"),
        ('empty "" quotes', "prompt quotes empty text"),
        ('blank "   " quotes', "prompt quotes empty text"),
        (None, "no prompt: the OCR reward reads the text to find from the prompt"),
    ],
)
def test_an_unscorable_prompt_says_what_is_missing(prompt, words):
    reason = build_reward("ocr").unscored_reason(prompt)
    assert reason == target_problem(prompt)
    assert words in reason and 'e.g. a sign that says "OPEN"' in reason


def test_a_prompt_with_a_target_blames_the_engine_when_unscored():
    assert target_problem('a sign that says "OPEN"') is None
    reason = build_reward("ocr").unscored_reason('a sign that says "OPEN"')
    assert reason.startswith("the OCR engine failed on this image (OnnxOcrEngine")


def test_model_info_names_the_engine_and_its_real_weights():
    import yaml
    from rapidocr import __file__ as rapidocr_init

    onnx = build_reward("ocr", {"engine": "onnx"}).model_info()
    assert not onnx.random_weights  # the tiny variant runs the real engine too
    assert onnx.description.startswith(f"{ONNX_MODELS} ONNX (rapidocr ")
    assert onnx.description.endswith(" wheel, real weights)")
    config = yaml.safe_load(Path(rapidocr_init).with_name("config.yaml").read_text())
    for part in ("Det", "Rec"):  # the models the description names are rapidocr's defaults
        assert config[part]["ocr_version"] in ONNX_MODELS
        assert config[part]["model_type"] in ONNX_MODELS
    paddle = build_reward("ocr", {"engine": "paddle", "paddle_lang": "fr"}).model_info()
    assert "paddleocr" in paddle.description and "lang fr" in paddle.description


def test_normalize_text_drops_all_whitespace_and_case():
    assert normalize_text(" Hello \n WORLD\t!") == "helloworld!"


# --- the formula ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "recognized", "reward"),
    [
        ("OPEN", "OPEN", 1.0),
        ("OPEN", "open", 1.0),
        ("OPEN", "WE ARE OPEN TODAY", 1.0),  # substring -> distance 0
        ("HELLO WORLD", "helloworld", 1.0),
        ("OPEN", "OPFN", 0.75),  # one substitution
        ("coffee", "cofee", 1 - 1 / 6),  # one deletion
        ("OPEN", "", 0.0),  # nothing read: distance = len(target)
        ("OPEN", "xyz", 0.0),  # completely wrong
        ("OPEN", "CLOSED FOR THE WINTER", 0.0),  # distance > len is capped at len
        ("OPEN", "OPEM NOW", 0.25),  # longer than target, not a substring: 3 edits
        ("ab", "abx", 1.0),
    ],
)
def test_ocr_reward_formula(target, recognized, reward):
    assert ocr_reward(target, recognized) == pytest.approx(reward)


def test_ocr_distance_is_levenshtein_when_not_a_substring():
    assert ocr_distance("OPEN", "OPEN") == 0
    assert ocr_distance("kitten", "sitting") == 3


def test_ocr_reward_rejects_empty_target():
    with pytest.raises(ValueError, match="empty"):
        ocr_reward("  ", "anything")


def test_join_lines_keeps_confident_lines_in_order():
    lines = [("Hello", 0.99), ("noise", 0.3), ("World", 0.5), ("zero", 0.0)]
    assert join_lines(lines, 0.5) == "helloworld"
    assert join_lines(lines, 0.0) == "hellonoiseworld"  # score 0 is dropped, as in Flow-GRPO
    assert join_lines([], 0.5) == ""


# --- PaddleOCR result parsing --------------------------------------------------------------------

_BOX = [[10.0, 10.0], [120.0, 10.0], [120.0, 40.0], [10.0, 40.0]]

# PaddleOCR 3.x ``predict()``: one OCRResult (a dict) per image, rec_scores may be numpy.
PADDLE_V3 = [
    {
        "input_path": None,
        "page_index": None,
        "dt_polys": [np.array(_BOX), np.array(_BOX)],
        "rec_texts": ["HELLO", "WORLD"],
        "rec_scores": np.array([0.998, 0.87], dtype=np.float32),
        "rec_polys": [np.array(_BOX), np.array(_BOX)],
        "rec_boxes": np.array([[10, 10, 120, 40], [10, 50, 120, 80]]),
    }
]
PADDLE_V3_JSON = [{"res": {"rec_texts": ["OPEN"], "rec_scores": [0.9]}}]
PADDLE_V3_EMPTY = [{"rec_texts": [], "rec_scores": np.array([]), "rec_polys": []}]
# PaddleOCR 2.x ``ocr(img, cls=False)``: one page per image, lines are [box, (text, score)].
PADDLE_V2 = [[[_BOX, ("HELLO", 0.998)], [_BOX, ("WORLD", 0.87)]]]
PADDLE_V2_EMPTY = [None]


@pytest.mark.parametrize(
    ("raw", "lines"),
    [
        (PADDLE_V3, [("HELLO", 0.998), ("WORLD", 0.87)]),
        (PADDLE_V3_JSON, [("OPEN", 0.9)]),
        (PADDLE_V3[0], [("HELLO", 0.998), ("WORLD", 0.87)]),  # a bare result dict
        (PADDLE_V3_EMPTY, []),
        (PADDLE_V2, [("HELLO", 0.998), ("WORLD", 0.87)]),
        (PADDLE_V2[0], [("HELLO", 0.998), ("WORLD", 0.87)]),  # a single un-nested page
        (PADDLE_V2_EMPTY, []),
        ([[]], []),
        ([], []),
        (None, []),
    ],
)
def test_parse_paddle_result(raw, lines):
    got = parse_paddle_result(raw)
    assert [t for t, _ in got] == [t for t, _ in lines]
    assert [s for _, s in got] == pytest.approx([s for _, s in lines], abs=1e-6)
    assert all(isinstance(s, float) for _, s in got)


@pytest.mark.parametrize(
    "raw",
    [
        "text",
        [{"dt_polys": []}],  # no rec_texts
        [{"rec_texts": ["a", "b"], "rec_scores": [0.9]}],  # length mismatch
        [[["not a line"]]],
    ],
)
def test_parse_paddle_result_rejects_unknown_shapes(raw):
    with pytest.raises(ValueError):
        parse_paddle_result(raw)


# --- engines and config, no OCR run --------------------------------------------------------------


def test_rgb_to_bgr_swaps_channels_and_validates():
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # red
    bgr = rgb_to_bgr(rgb)
    assert bgr.flags["C_CONTIGUOUS"] and bgr[0, 0].tolist() == [0, 0, 255]
    with pytest.raises(ValueError, match="shape"):
        rgb_to_bgr(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        rgb_to_bgr(np.zeros((4, 4, 3), dtype=np.float32))


def test_config_builds_engines_and_rejects_unknown_fields():
    for variant in ("tiny", "pretrained"):  # the real ONNX models ship in the wheel: no tiny OCR
        reward = build_reward("ocr", {"variant": variant})
        assert isinstance(reward, OcrReward) and isinstance(reward.engine, OnnxOcrEngine)
    paddle = build_reward("ocr", {"engine": "paddle", "paddle_lang": "en", "device": "cuda:1"})
    assert isinstance(paddle.engine, PaddleOcrEngine) and paddle.engine.device == "cuda:1"
    with pytest.raises(ValueError, match="ocr.min_confidence"):
        build_reward("ocr", {"min_confidence": 2})
    with pytest.raises(ValueError, match="ocr.bogus"):
        build_reward("ocr", {"bogus": 1})


def test_paddle_engine_load_explains_the_missing_extra():
    try:
        import paddleocr  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("paddleocr is installed here")
    with pytest.raises(RuntimeError, match="runtime_env"):
        PaddleOcrEngine().load()


@pytest.mark.parametrize("version", ["3.0.2", "2.9.1"])
def test_paddle_engine_drives_both_paddleocr_apis(version, monkeypatch):
    """A stand-in ``paddleocr`` module records how the engine calls the 3.x and 2.x APIs."""
    calls = {}

    class FakePaddleOCR:
        def __init__(self, **kwargs):
            calls["init"] = kwargs

        def predict(self, image):
            calls["image"] = image
            return PADDLE_V3

        def ocr(self, image, cls):
            calls["image"], calls["cls"] = image, cls
            return PADDLE_V2

    fake = types.ModuleType("paddleocr")
    fake.__version__ = version
    fake.PaddleOCR = FakePaddleOCR
    monkeypatch.setitem(sys.modules, "paddleocr", fake)

    engine = PaddleOcrEngine(lang="en", device="cuda:1")
    engine.load()
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    assert [t for t, _ in engine.read(rgb)] == ["HELLO", "WORLD"]
    assert calls["image"][0, 0].tolist() == [0, 0, 255]  # BGR reached the engine
    if version.startswith("3"):
        assert calls["init"]["use_doc_orientation_classify"] is False
        assert calls["init"]["use_textline_orientation"] is False
        assert calls["init"]["device"] == "gpu:1" and calls["init"]["lang"] == "en"
    else:
        assert calls["init"]["use_angle_cls"] is False and calls["init"]["use_gpu"] is True
        assert calls["cls"] is False


def test_score_before_load_and_length_mismatch_raise():
    reward = build_reward("ocr")
    with pytest.raises(RuntimeError, match="not loaded"):
        reward.score([np.zeros((8, 8, 3), np.uint8)], ['"a"'])
    reward.loaded = True
    with pytest.raises(ValueError, match="2 prompts"):
        reward.score([np.zeros((8, 8, 3), np.uint8)], ['"a"', '"b"'])


# --- real OCR on rendered text -------------------------------------------------------------------


WORDS = ["OPEN", "HELLO WORLD", "APEX 2026", "coffee"]
OTHER = {"OPEN": "CLOSED", "HELLO WORLD": "GOODBYE", "APEX 2026": "lunch", "coffee": "PIZZA"}


@pytest.fixture(scope="module")
def ocr() -> OcrReward:
    """The real ONNX engine, loaded once for this module."""
    reward = build_reward("ocr", {"engine": "onnx"})
    start = time.perf_counter()
    reward.load()
    print(f"\n[ocr] engine load: {time.perf_counter() - start:.2f} s")
    return reward


@pytest.mark.slow
def test_real_ocr_reads_rendered_words(ocr):
    images = [render(w) for w in WORDS]
    start = time.perf_counter()
    lines = [ocr.engine.read(img) for img in images]
    per_image = (time.perf_counter() - start) / len(images)
    for word, got in zip(WORDS, lines, strict=True):
        print(f"[ocr] {word!r} -> {got}")
    exact = sum(
        normalize_text("".join(t for t, _ in got)) == normalize_text(w)
        for w, got in zip(WORDS, lines, strict=True)
    )
    print(f"[ocr] exact reads {exact}/{len(WORDS)}, {per_image:.3f} s per 512x512 image")

    match = ocr.score(images, [f'A sign that says "{w}"' for w in WORDS])
    other = ocr.score(images, [f'A sign that says "{OTHER[w]}"' for w in WORDS])
    print(f"[ocr] matching prompts: {match}\n[ocr] other-word prompts: {other}")
    assert all(r is not None and r >= 0.9 for r in match), match
    assert all(r is not None and r < 0.5 for r in other), other
    assert ocr.score(images[:1], ['A sign that says "OPEN"']) == [1.0]


def test_blank_image_scores_zero_and_unquoted_prompt_none(ocr):
    blank = np.full((512, 512, 3), 255, dtype=np.uint8)
    assert ocr.score([blank], ['A sign that says "OPEN"']) == [0.0]
    assert ocr.score([render("OPEN")], ["A sign that says OPEN"]) == [None]


def test_batch_of_different_sizes(ocr):
    images = [
        render("OPEN", (256, 128), 40),
        render("HELLO WORLD", (768, 512), 64),
        render("coffee", (320, 320), 40),
        np.full((64, 96, 3), 255, np.uint8),
    ]
    prompts = ['"OPEN"', 'a banner reading "hello world"', None, 'a "sign"']
    start = time.perf_counter()
    out = ocr.score(images, prompts)
    print(f"[ocr] mixed-size batch: {out} in {time.perf_counter() - start:.2f} s")
    assert out[0] >= 0.9 and out[1] >= 0.9
    assert out[2] is None and out[3] == 0.0


def test_engine_exception_gives_none_for_that_image_only(ocr, monkeypatch, caplog):
    real_read = ocr.engine.read
    images = [render("OPEN"), np.full((32, 32, 3), 1, np.uint8), render("OPEN")]

    def flaky_read(image):
        if image.shape[0] == 32:
            raise RuntimeError("onnxruntime exploded")
        return real_read(image)

    monkeypatch.setattr(ocr.engine, "read", flaky_read)
    with caplog.at_level("WARNING", logger="services.rewards.ocr"):
        out = ocr.score(images, ['"OPEN"'] * 3)
    assert out == [1.0, None, 1.0]
    assert "'ocr'" in caplog.text and "image 1 of 3" in caplog.text
    assert "onnxruntime exploded" in caplog.text


def test_malformed_image_gives_none(ocr):
    out = ocr.score([np.zeros((16, 16), np.uint8), render("OPEN")], ['"OPEN"', '"OPEN"'])
    assert out == [None, 1.0]


def test_health_check_passes(ocr):
    ocr.health_check()
