"""Unit tests of the model-based rewards (tiny random-weight models) and the model-free ones.

Every reward builds from its config offline, scores a batch of mixed sizes with one finite
float per image, is deterministic, and gives the same score alone as inside a batch (this
catches padding and batching bugs). The pretrained loaders run on local directories written
from the tiny models, so the real loading code path is exercised without a network.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from common.tokenizers import clip_tokenizer
from services.rewards._torch.clip import build_tiny_clip
from services.rewards._torch.preprocess import CLIP_MEAN, CLIP_STD, ClipPreprocess
from services.rewards.aesthetic import AestheticMLP
from services.rewards.base import build_reward, get_reward_class, reward_names
from services.rewards.deqa import (
    IMAGE_TOKEN_INDEX,
    expand2square,
    level_expectation,
    level_token_ids,
    make_word_tokenizer,
    tokenize_with_image,
)

MINE = [
    "aesthetic",
    "clipscore",
    "colorfulness",
    "deqa",
    "jpeg_compressibility",
    "pickscore",
    "prompt_alignment",
]
MODELS = ["aesthetic", "clipscore", "deqa", "pickscore"]
PROMPTS = ["a cat", "a red car on a long road at night", "x"]
# prompt_alignment scores only scene captions (anything else is None)
CAPTIONS = [
    "a red circle on a blue background",
    'an orange square on a white background with the word "SUN"',
    "a black triangle on a yellow background",
]


def prompts_for(name: str) -> list[str]:
    """Prompts that ``name`` can score: scene captions for prompt_alignment."""
    return CAPTIONS if name == "prompt_alignment" else PROMPTS


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(17, 33), (64, 64), (300, 200)]
    ]


@pytest.fixture(scope="module")
def loaded() -> dict:
    """One loaded tiny instance per reward; batch_size 2 so that 3 images span two chunks."""
    out = {}
    for name in MINE:
        reward = build_reward(name, {"variant": "tiny", "batch_size": 2})
        reward.load()
        out[name] = reward
    return out


def test_all_registered():
    assert set(MINE) <= set(reward_names())


@pytest.mark.parametrize("name", MINE)
def test_scores_one_finite_float_per_image(loaded, images, name):
    scores = loaded[name].score(images, prompts_for(name))
    assert len(scores) == len(images)
    assert all(isinstance(s, float) and np.isfinite(s) for s in scores)


@pytest.mark.parametrize("name", MINE)
def test_batch_composition_independent(loaded, images, name):
    prompts = prompts_for(name)
    together = loaded[name].score(images, prompts)
    alone = [loaded[name].score([im], [p])[0] for im, p in zip(images, prompts, strict=True)]
    reversed_ = loaded[name].score(images[::-1], prompts[::-1])[::-1]
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(together, reversed_, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_deterministic_for_seed(loaded, images, name):
    again = build_reward(name, {"variant": "tiny", "seed": 0})
    again.load()
    other = build_reward(name, {"variant": "tiny", "seed": 1})
    other.load()
    first = loaded[name].score(images, PROMPTS)
    np.testing.assert_allclose(again.score(images, PROMPTS), first, rtol=1e-6, atol=1e-7)
    assert not np.allclose(other.score(images, PROMPTS), first, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", MINE)
def test_missing_prompt(loaded, images, name):
    prompts = prompts_for(name)
    scores = loaded[name].score(images, [prompts[0], None, prompts[2]])
    if loaded[name].needs_prompt:
        assert scores[1] is None and scores[0] is not None and scores[2] is not None
        assert loaded[name].score(images[:1], [None]) == [None]
    else:
        assert all(isinstance(s, float) for s in scores)


@pytest.mark.parametrize("name", MINE)
def test_length_mismatch_raises(loaded, images, name):
    with pytest.raises(ValueError, match="prompts"):
        loaded[name].score(images, PROMPTS[:2])


def test_pickscore_formula_matches_direct_computation(loaded, images):
    reward = loaded["pickscore"]
    model, tok = reward.clip.model, reward.clip.tokenizer
    pixels = reward.pixels(images)  # the configured path; test_device_preprocess compares them
    text = tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pixels).pooler_output
        txt = model.get_text_features(**text).pooler_output
        cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
        expected = model.logit_scale.exp() * cos / 26
    np.testing.assert_allclose(
        reward.score(images, PROMPTS), expected.numpy(), rtol=1e-5, atol=1e-6
    )


def test_clipscore_scale_is_flow_grpo(loaded, images):
    pick, clip = loaded["pickscore"], loaded["clipscore"]  # same tiny weights for seed 0
    ratio = np.array(clip.score(images, PROMPTS)) / np.array(pick.score(images, PROMPTS))
    np.testing.assert_allclose(ratio, 26 / 30, rtol=1e-5)


def test_preprocess_matches_transformers_clip_processor(images):
    pil_processor = getattr(pytest.importorskip("transformers"), "CLIPImageProcessorPil", None)
    if pil_processor is None:  # transformers 4.x: the slow processor is CLIPImageProcessor
        pil_processor = pytest.importorskip("transformers").CLIPImageProcessor
    for size in (32, 224):
        ref = pil_processor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        expected = ref(images=images, return_tensors="pt")["pixel_values"]
        ours = ClipPreprocess(size=size, crop=(size, size))(images)
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def test_preprocess_reads_hf_config():
    cfg = {
        "crop_size": {"height": 224, "width": 224},
        "do_center_crop": True,
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
        "resample": 3,
        "size": {"shortest_edge": 224},
    }
    pre = ClipPreprocess.from_dict(cfg)
    assert (pre.size, pre.crop, pre.resample) == (224, (224, 224), 3)
    assert ClipPreprocess.from_dict({"size": 448, "crop_size": 448}).crop == (448, 448)


def _save_tiny_clip(path, seed=0):
    """Write a tiny CLIP as a local 'pretrained' dir: weights, tokenizer, preprocessor config."""
    parts = build_tiny_clip(build_reward("pickscore").config.tiny, seed)
    parts.model.save_pretrained(path)
    parts.tokenizer.save_pretrained(path)
    size = parts.preprocess.crop[0]
    pre = {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}}
    (path / "preprocessor_config.json").write_text(json.dumps(pre))
    return parts


@pytest.mark.slow  # saves and reloads a CLIP checkpoint
def test_pickscore_pretrained_loader_on_local_dir(loaded, images, tmp_path):
    _save_tiny_clip(tmp_path)
    reward = build_reward(
        "pickscore", {"variant": "pretrained", "model": str(tmp_path), "processor": str(tmp_path)}
    )
    reward.load()
    np.testing.assert_allclose(
        reward.score(images, PROMPTS), loaded["pickscore"].score(images, PROMPTS), rtol=1e-5
    )


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_aesthetic_pretrained_loader_on_local_dir(loaded, images, tmp_path, fmt):
    _save_tiny_clip(tmp_path)
    state = {k: v.contiguous() for k, v in loaded["aesthetic"].mlp.state_dict().items()}
    weights = tmp_path / f"mlp.{fmt}"
    if fmt == "pth":
        torch.save(state, weights)
    else:
        from safetensors.torch import save_file

        save_file(state, str(weights))
    params = {"variant": "pretrained", "model": str(tmp_path), "mlp_weights": str(weights)}
    reward = build_reward("aesthetic", params)
    reward.load()
    assert reward.clip.tokenizer is None  # vision tower only
    np.testing.assert_allclose(
        reward.score(images, PROMPTS), loaded["aesthetic"].score(images, PROMPTS), rtol=1e-5
    )


def test_aesthetic_mlp_shape_for_pretrained_config():
    reward = build_reward("aesthetic", {"variant": "pretrained", "mlp_weights": "x.pth"})
    assert not reward.loaded  # built, nothing downloaded
    assert AestheticMLP(768).shape == [768, 1024, 128, 64, 16, 1]
    dropouts = [m.p for m in AestheticMLP().layers if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [0.2, 0.2, 0.1]


def test_deqa_expectation_on_hand_made_logits():
    weights = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    logits = torch.tensor(
        [[100.0, 0, 0, 0, 0], [0.0] * 5, [0, 0, 0, 0, 100.0], [0, 0, 50.0, 50.0, 0]]
    )
    np.testing.assert_allclose(
        level_expectation(logits, weights) / 5, [1.0, 0.6, 0.2, 0.5], atol=1e-6
    )


def test_deqa_prompt_tokenization():
    tok = make_word_tokenizer(["USER: rate this?\n", "\nASSISTANT: it is", "good bad"])
    ids = tokenize_with_image(tok, "USER: rate this?\n<|image|>\nASSISTANT: it is").tolist()
    assert ids.count(IMAGE_TOKEN_INDEX) == 1 and ids.count(tok.bos_token_id) == 1
    assert ids[0] == tok.bos_token_id
    assert level_token_ids(tok, ["good", "bad"]) == tok.convert_tokens_to_ids(["good", "bad"])


def test_deqa_expand2square_centres_the_image():
    image = np.zeros((2, 6, 3), dtype=np.uint8)
    square = expand2square(image, (122, 116, 104))
    assert square.shape == (6, 6, 3)
    assert (square[2:4] == 0).all() and (square[:2] == (122, 116, 104)).all()


def test_deqa_tiny_scores_in_range(loaded, images):
    assert all(0.2 <= s <= 1.0 for s in loaded["deqa"].score(images, [None] * 3))


def test_jpeg_noise_scores_lower_than_flat(loaded):
    rng = np.random.default_rng(1)
    noisy = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    flat = np.full((128, 128, 3), 90, dtype=np.uint8)
    s_noisy, s_flat = loaded["jpeg_compressibility"].score([noisy, flat], [None, None])
    assert s_noisy < s_flat < 0


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("pickscore", {"scale": 0}, "pickscore.scale"),
        ("pickscore", {"bogus": 1}, "pickscore.bogus"),
        ("clipscore", {"tiny": {"image_size": 30}}, "clipscore.tiny"),
        ("aesthetic", {"variant": "pretrained"}, "aesthetic.mlp_weights"),
        ("deqa", {"variant": "pretrained"}, "deqa.revision"),
        ("deqa", {"variant": "pretrained", "revision": "main"}, "deqa.revision"),
        ("deqa", {"level_weights": [1.0, 2.0]}, "deqa.level_weights"),
        ("deqa", {"prompt": "no image here"}, "deqa.prompt"),
        ("jpeg_compressibility", {"quality": 0}, "jpeg_compressibility.quality"),
        ("jpeg_compressibility", {"scale_kb": -1}, "jpeg_compressibility.scale_kb"),
    ],
)
def test_bad_params_name_the_field(name, params, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        build_reward(name, params)


def test_deqa_pinned_revision_or_local_path_accepted(tmp_path):
    build_reward("deqa", {"variant": "pretrained", "revision": "0" * 40})
    build_reward("deqa", {"variant": "pretrained", "model": str(tmp_path)})


@pytest.mark.parametrize("name", MINE)
def test_health_check_passes_when_loaded(loaded, name):
    loaded[name].health_check()


@pytest.mark.parametrize("name", MODELS)
def test_health_check_raises_on_broken_model(name):
    reward = build_reward(name, {"variant": "tiny"})
    with pytest.raises(RuntimeError, match="not loaded"):
        reward.health_check()
    reward.load()
    # one weight on the image path is enough to break every score
    weight = (
        reward.backbone.projector.weight
        if name == "deqa"
        else reward.clip.model.visual_projection.weight
    )
    with torch.no_grad():
        weight.fill_(float("nan"))
    with pytest.raises(RuntimeError, match="health probe"):
        reward.health_check()


def test_char_tokenizer_adds_bos_and_eos():
    tok = clip_tokenizer()
    ids = tok("ab")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) == 4


# --------------------------------------------------------------------------- what scores

# Whether each registered reward's default build scores with random weights: a new reward must
# be added here, so that evaluation can never mistake a test model for a real one.
RANDOM_BY_DEFAULT = {
    "aesthetic": True,
    "clipscore": True,
    "colorfulness": False,
    "deqa": True,
    "jpeg_compressibility": False,
    "ocr": False,  # the real PP-OCR models ship in the rapidocr wheel
    "pickscore": True,
    "prompt_alignment": False,
}
PRETRAINED = {
    "aesthetic": ({"mlp_weights": "/w/sac+logos+ava1-l14-linearMSE.pth"}, "+ MLP sac+logos"),
    "clipscore": ({}, "openai/clip-vit-large-patch14 (pretrained weights)"),
    "deqa": ({"revision": "0123456789" * 4}, "zhiyuanyou/DeQA-Score-Mix3@012345678901"),
    "pickscore": ({}, "yuvalkirstain/PickScore_v1 (pretrained weights)"),
}


def production_rewards() -> list[str]:
    """The registered rewards of services/rewards (a test may have registered a bench one)."""
    names = reward_names()
    return [n for n in names if get_reward_class(n).__module__.startswith("services.rewards.")]


def test_every_reward_says_whether_its_weights_are_random():
    assert sorted(RANDOM_BY_DEFAULT) == production_rewards()
    for name, random in RANDOM_BY_DEFAULT.items():
        info = build_reward(name).model_info()  # from the config alone: nothing is loaded
        assert info.random_weights is random, name
        assert info.description.startswith("random-weight") is random, (name, info)


@pytest.mark.parametrize("name", MODELS)
def test_pretrained_variants_name_their_checkpoint(name):
    params, words = PRETRAINED[name]
    info = build_reward(name, {"variant": "pretrained", **params}).model_info()
    assert not info.random_weights and words in info.description
    tiny = build_reward(name, {"seed": 7}).model_info().description
    assert tiny.startswith("random-weight tiny ") and tiny.endswith("(test variant, seed 7)")


def test_a_model_description_cannot_hide_random_weights():
    from services.rewards.base import ModelInfo

    with pytest.raises(ValueError, match="random-weight"):
        ModelInfo("tiny CLIP", random_weights=True)
    with pytest.raises(ValueError, match="random-weight"):
        ModelInfo("random-weight MLP", random_weights=False)
