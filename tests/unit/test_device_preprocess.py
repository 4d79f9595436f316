"""The CLIP rewards' speed switches give the reference path's pixels and scores, within tolerance.

Hand-made images (noise, checkerboards of 1, 3 and 7 px, gradients, a solid colour, odd
sizes and aspect ratios) go through ``preprocess: device`` (torch on the CPU here, the same
code as on a GPU) and through transformers' own PIL processor (``CLIPImageProcessorPil``).
Tolerances, as measured on torch 2.13 / Pillow 13 (docs/rewards.md, "Speed switches"):

- pixels: at most 1 level in 255 anywhere (``LEVEL`` in normalized units), and on these
  images at most 0.34 levels on average (1-px checkerboards, the worst case);
- scores of the tiny random CLIPs at 224 px: measured within 4.4e-4 (PickScore), 3.8e-4
  (CLIPScore) and 1.9e-4 (aesthetic); asserted within 1e-3;
- ``attention: eager`` against ``sdpa`` and ``compile`` against eager, in float32: 1e-5;
- ``dtype: bfloat16`` against float32 (an existing switch): measured 1e-3, asserted 3e-3.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from services.rewards._torch.device_preprocess import DevicePreprocess, pil_like_resize
from services.rewards._torch.fastpath import pixel_fn
from services.rewards._torch.preprocess import CLIP_STD, ClipPreprocess
from services.rewards.base import build_reward

LEVEL = 1 / (255 * min(CLIP_STD)) + 1e-6  # one grey level, in normalized pixel units
TINY_224 = {"image_size": 224, "patch_size": 32}  # a real CLIP's input size, tiny widths
CPU = torch.device("cpu")


def _checker(h: int, w: int, k: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    v = (((yy // k) + (xx // k)) % 2 * 255).astype(np.uint8)
    return np.stack([v, 255 - v, v // 2], -1)


def _gradient(h: int, w: int) -> np.ndarray:
    g = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    return np.stack([g, g[:, ::-1], np.full((h, w), 90.0)], -1).astype(np.uint8)


@pytest.fixture(scope="module")
def hand_made() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "noise_512": rng.integers(0, 256, (512, 512, 3), dtype=np.uint8),
        "checker_1px": _checker(512, 512, 1),
        "checker_3px": _checker(512, 512, 3),
        "checker_7px": _checker(512, 512, 7),
        "gradient": _gradient(512, 512),
        "solid": np.full((512, 512, 3), (200, 30, 120), dtype=np.uint8),
        "noise_300x200": rng.integers(0, 256, (300, 200, 3), dtype=np.uint8),
        "noise_17x33": rng.integers(0, 256, (17, 33, 3), dtype=np.uint8),  # upscaled
        "checker_480x640": _checker(480, 640, 2),
    }


@pytest.mark.parametrize("size", [224, 32])
def test_device_pixels_match_the_processors_own_output(hand_made, size):
    processor = pytest.importorskip("transformers").CLIPImageProcessorPil
    ref = processor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    device = DevicePreprocess(ClipPreprocess(size=size, crop=(size, size)), CPU, torch.float32)
    for name, image in hand_made.items():
        expected = ref(images=[image], return_tensors="pt")["pixel_values"]
        got = device([image])
        assert got.shape == expected.shape, name
        diff = (got - expected).abs()
        assert diff.max() <= LEVEL, (name, float(diff.max() / LEVEL))
        assert diff.mean() <= 0.34 * LEVEL, (name, float(diff.mean() / LEVEL))


def test_one_pass_resize_would_not_match(hand_made):
    """Why two rounded passes: a single float pass misses Pillow by several levels."""
    image = torch.from_numpy(hand_made["checker_3px"]).permute(2, 0, 1)[None].float()
    spec = ClipPreprocess(size=(224, 336), crop=None)
    ref = torch.from_numpy(np.array(spec.resize(hand_made["checker_3px"]))).permute(2, 0, 1)
    one = torch.nn.functional.interpolate(image, size=(224, 336), mode="bicubic", antialias=True)
    two = pil_like_resize(image.clone(), (224, 336))
    assert (one[0].round().clamp(0, 255) - ref).abs().max() > 5
    assert (two[0] - ref).abs().max() <= 1


def test_mixed_sizes_are_batched_per_size_and_kept_in_order(hand_made):
    spec = ClipPreprocess(size=32, crop=(32, 32))
    device = DevicePreprocess(spec, CPU, torch.float32)
    images = [hand_made[k] for k in ("noise_17x33", "noise_512", "noise_300x200", "solid")]
    batch = device(images)
    alone = torch.cat([device([im]) for im in images])
    torch.testing.assert_close(batch, alone, rtol=0, atol=0)


def test_exact_size_no_crop_and_output_dtype(hand_made):
    spec = ClipPreprocess(size=(40, 24), crop=None)
    out = DevicePreprocess(spec, CPU, torch.bfloat16)([hand_made["gradient"]])
    assert out.shape == (1, 3, 40, 24) and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), spec([hand_made["gradient"]]), rtol=0, atol=2 * LEVEL)


def test_a_filter_torch_lacks_falls_back_to_pil(hand_made, caplog):
    config = build_reward("pickscore").config
    lanczos = ClipPreprocess(size=32, crop=(32, 32), resample=1)
    with caplog.at_level(logging.WARNING):
        fn = pixel_fn(config, lanczos, CPU, torch.float32)
    assert "no torch equivalent" in caplog.text
    torch.testing.assert_close(fn([hand_made["solid"]]), lanczos([hand_made["solid"]]))
    with pytest.raises(ValueError, match="preprocess: pil"):
        DevicePreprocess(lanczos, CPU, torch.float32)


def _scores(name: str, images, prompts, **params) -> np.ndarray:
    reward = build_reward(name, {"variant": "tiny", "tiny": TINY_224, "batch_size": 4, **params})
    reward.load()
    return np.array(reward.score(images, prompts), dtype=np.float64)


PROMPTS = ["a cat", "a red car on a long road at night", "x"]


@pytest.mark.parametrize("name", ["pickscore", "clipscore", "aesthetic"])
def test_device_preprocessing_gives_the_pil_paths_scores(hand_made, name):
    images = list(hand_made.values())
    prompts = [PROMPTS[i % 3] for i in range(len(images))]
    pil = _scores(name, images, prompts, preprocess="pil")
    device = _scores(name, images, prompts, preprocess="device")
    np.testing.assert_allclose(device, pil, rtol=0, atol=1e-3)
    assert np.abs(device - pil).max() > 0  # the paths really differ: the test can fail


@pytest.mark.parametrize("name", ["pickscore", "aesthetic"])
def test_eager_attention_gives_the_sdpa_scores(hand_made, name):
    images = list(hand_made.values())[:4]
    prompts = PROMPTS + PROMPTS[:1]
    sdpa = _scores(name, images, prompts, attention="sdpa")
    eager = _scores(name, images, prompts, attention="eager")
    np.testing.assert_allclose(eager, sdpa, rtol=0, atol=1e-5)


def test_bfloat16_stays_near_float32(hand_made):
    images = list(hand_made.values())
    prompts = [PROMPTS[i % 3] for i in range(len(images))]
    fp32 = _scores("pickscore", images, prompts, preprocess="pil")
    bf16 = _scores("pickscore", images, prompts, dtype="bfloat16")
    np.testing.assert_allclose(bf16, fp32, rtol=0, atol=3e-3)


def test_repeated_prompts_share_one_text_pass(hand_made):
    """A group's images share a prompt: deduplicated, the scores are those of separate calls."""
    reward = build_reward("pickscore", {"variant": "tiny", "batch_size": 8})
    reward.load()
    images = list(hand_made.values())[:5]
    prompts = ["a cat", "a dog", "a cat", "a cat", "a dog"]
    calls: list[int] = []
    text_model = reward.clip.model.text_model
    hook = text_model.register_forward_hook(
        lambda m, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        together = reward.score(images, prompts)
    finally:
        hook.remove()
    assert calls == [2]  # two distinct prompts, one text pass
    alone = [reward.score([im], [p])[0] for im, p in zip(images, prompts, strict=True)]
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_compile_switch_compiles_only_the_image_tower():
    reward = build_reward("pickscore", {"variant": "tiny", "compile": True})
    reward.load()  # compiling happens lazily, on the first call
    model = reward.clip.model
    assert model.vision_model._compiled_call_impl is not None
    assert model.text_model._compiled_call_impl is None


@pytest.mark.slow  # inductor compiles the tiny tower on the CPU: minutes on 2 shared cores
def test_compiled_image_tower_gives_the_eager_scores(hand_made):
    images = [hand_made[k] for k in ("noise_512", "gradient", "checker_3px")]
    eager = _scores("pickscore", images, PROMPTS)
    compiled = _scores("pickscore", images, PROMPTS, compile=True)
    np.testing.assert_allclose(compiled, eager, rtol=0, atol=1e-5)
