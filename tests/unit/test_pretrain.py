"""The small pretrained model: data, tokenizers, a short pretraining run, the shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.config import ModelConfig
from trainer.model.pipeline import ModelLoadError, load_pipeline
from trainer.pretrain.config import load_pretrain_config
from trainer.pretrain.main import pretrain
from trainer.pretrain.scenes import (
    COLOURS,
    MIN_CONTRAST,
    SHAPES,
    WORDS,
    Scene,
    Variation,
    caption,
    distinct_captions,
    faded,
    render,
    scene_batch,
)
from trainer.pretrain.vocabulary import (
    GRAMMAR_WORDS,
    make_word_clip_tokenizer,
    make_word_t5_tokenizer,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "shapes-sd3"
# a model small enough to fit twice in a few seconds
SMALL = [
    "model.transformer_layers=1",
    "model.attention_head_dim=8",
    "model.attention_heads=2",
    "model.latent_channels=4",
    "model.vae_block_channels=[8,8]",
    "model.clip_hidden_size=16",
    "model.clip_projection_dim=16",
    "model.t5_dim=32",
    "model.t5_ff_dim=32",
    "resolution=32",
    "vae.batch_size=4",
    "flow.batch_size=8",
    "flow.dataset_size=64",
    "flow.warmup_steps=5",
    "log_every=1",
]


def test_scenes_are_a_function_of_the_seed():
    a, caps_a, _ = scene_batch(3, 6)
    b, caps_b, _ = scene_batch(3, 6)
    c, _, _ = scene_batch(4, 6)
    assert a.shape == (6, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and caps_a == caps_b
    assert not np.array_equal(a, c)


def test_without_variation_scenes_draw_the_palette_exactly():
    images, _, drawn = scene_batch(5, 40)
    assert all(s.fade == (0.0, 0.0) and s.light == (0.0, 0.0) for s in drawn)
    for image, scene in zip(images, drawn, strict=True):
        assert tuple(image[0, 0]) == COLOURS[scene.background]  # a corner is background


def test_variation_fades_and_lights_within_bounds_and_keeps_shapes_separable():
    variation = Variation(fade=0.35, light=40)
    images, captions, drawn = scene_batch(5, 300, variation=variation)
    again, captions_again, _ = scene_batch(5, 300, variation=variation)
    assert np.array_equal(images, again) and captions == captions_again
    fades = np.array([s.fade for s in drawn])
    lights = np.array([s.light[0] for s in drawn])
    assert fades.min() >= 0 and fades.max() <= 0.35 and fades.std() > 0.05
    assert lights.min() >= 0 and lights.max() <= 40 and lights.std() > 5
    for scene in drawn:
        palette_gap = np.linalg.norm(np.subtract(COLOURS[scene.colour], COLOURS[scene.background]))
        fg = faded(COLOURS[scene.colour], scene.fade[0])
        bg = faded(COLOURS[scene.background], scene.fade[1])
        assert np.linalg.norm(np.subtract(fg, bg)) >= min(MIN_CONTRAST, palette_gap)
    # the drawn background is the faded colour, brighter on one side by the ramp's amplitude
    scene = Scene("circle", "red", "blue", None, (32.0, 32.0), 8.0, (0.3, 0.2), (40.0, 0.0))
    image = render(scene).astype(float)
    assert tuple(image[32, 32]) == faded(COLOURS["red"], 0.3)
    left, right = image[32, 1], image[32, 62]
    assert np.allclose(right - left, 40 * 61 / 64, atol=2)
    assert np.allclose((left + right) / 2, faded(COLOURS["blue"], 0.2), atol=1.5)


def test_caption_names_what_is_drawn():
    scene = Scene("circle", "orange", "blue", "SUN", (32.0, 18.0), 9.0)
    assert caption(scene) == 'an orange circle on a blue background with the word "SUN"'
    image = render(scene)
    assert tuple(image[1, 1]) == COLOURS["blue"]  # the border is the background
    assert tuple(image[18, 32]) == COLOURS["orange"]  # the centre is the shape
    plain = Scene("square", "red", "white", None, (32.0, 32.0), 12.0)
    assert caption(plain) == "a red square on a white background"


def test_distinct_captions_are_distinct_and_exclude():
    held_out = distinct_captions(1, 20)
    train = distinct_captions(2, 50, exclude=set(held_out))
    assert len(set(train)) == 50 and not set(train) & set(held_out)
    assert all('"' in c for c in train)  # word_share 1: every caption asks for a word


def test_shipped_prompt_files_come_from_the_grammar_and_are_disjoint():
    def read(name):
        lines = (ROOT / "trainer/data/prompts" / name).read_text().splitlines()
        return [x for x in lines if x and not x.startswith("#")]

    train, evals = read("shapes_train.txt"), read("shapes_eval.txt")
    assert train == distinct_captions(7, 256, exclude=set(evals))
    assert evals == distinct_captions(2024, 32)


@pytest.mark.parametrize("make", [make_word_clip_tokenizer, make_word_t5_tokenizer])
def test_every_grammar_word_is_one_token(make):
    tokenizer = make(20)
    for word in GRAMMAR_WORDS:
        pieces = tokenizer.tokenize(word)
        assert len([p for p in pieces if p != "\u2581"]) == 1, (word, pieces)
    assert set(WORDS) | set(SHAPES) | set(COLOURS) <= set(GRAMMAR_WORDS)


@pytest.mark.slow
def test_short_pretraining_lowers_both_losses_and_loads_like_sd3(tmp_path):
    out = tmp_path / "model"
    cfg = load_pretrain_config(None, [*SMALL, "vae.steps=60", "flow.steps=80", f"output_dir={out}"])
    assert pretrain(cfg, progress=False) == out
    losses = json.loads((out / "losses.json").read_text())
    for phase in ("vae", "flow"):
        values = [v for _, v in losses[phase]]
        assert np.mean(values[-10:]) < 0.9 * np.mean(values[:10]), phase
    for name in ("loss_curve.png", "samples.png", "pretrain_config.yaml", "model_index.json"):
        assert (out / name).is_file(), name
    pipe = load_pipeline(ModelConfig(kind="pretrained", pretrained=str(out), dtype="float32"))
    assert pipe.transformer.dtype == torch.float32
    assert pipe.tokenizer.model_max_length == cfg.max_sequence_length


@pytest.mark.slow
def test_pretraining_is_deterministic(tmp_path):
    weights = []
    for name in ("a", "b"):
        cfg = load_pretrain_config(
            None, [*SMALL, "vae.steps=3", "flow.steps=3", f"output_dir={tmp_path / name}"]
        )
        pipe_dir = pretrain(cfg, progress=False)
        weights.append((pipe_dir / "transformer/diffusion_pytorch_model.safetensors").read_bytes())
    assert weights[0] == weights[1]


def test_shipped_model_loads_and_draws_64px_images():
    assert SHIPPED.is_dir(), "models/shapes-sd3 is committed; run `make pretrain` to rebuild it"
    size = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file())
    assert size < 40e6
    pipe = load_pipeline(ModelConfig(kind="pretrained", pretrained=str(SHIPPED), dtype="float32"))
    images = pipe(
        ['a red circle on a blue background with the word "SUN"'],
        height=64,
        width=64,
        num_inference_steps=4,
        max_sequence_length=pipe.tokenizer.model_max_length,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()


def test_missing_or_damaged_model_folder_names_path_and_file(tmp_path):
    with pytest.raises(ModelLoadError, match="nope does not exist"):
        load_pipeline(ModelConfig(kind="pretrained", pretrained=str(tmp_path / "nope")))
    folder = tmp_path / "bad"
    folder.mkdir()
    with pytest.raises(ModelLoadError, match="model_index.json is missing"):
        load_pipeline(ModelConfig(kind="pretrained", pretrained=str(folder)))
    (folder / "model_index.json").write_text(json.dumps({"transformer": ["diffusers", "X"]}))
    with pytest.raises(ModelLoadError, match="transformer is missing"):
        load_pipeline(ModelConfig(kind="pretrained", pretrained=str(folder)))
    (folder / "transformer").mkdir()
    (folder / "transformer/diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(ModelLoadError, match="diffusion_pytorch_model.safetensors is damaged"):
        load_pipeline(ModelConfig(kind="pretrained", pretrained=str(folder)))


def test_local_folder_or_hub_id(tmp_path, monkeypatch):
    from trainer.model.pipeline import looks_local

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert looks_local("models/not-yet-written")  # its first folder exists here
    assert looks_local("./x") and looks_local("~/x") and looks_local(str(tmp_path / "y"))
    assert not looks_local("stabilityai/stable-diffusion-3.5-medium")


def test_relative_model_folder_is_resolved_before_workers_start(tmp_path, monkeypatch):
    from trainer.config import load_config
    from trainer.main import absolute_paths

    monkeypatch.chdir(ROOT)
    cfg = absolute_paths(load_config(ROOT / "deploy/configs/local.yaml"))
    assert cfg.model.pretrained == str(SHIPPED)
    hub = load_config(ROOT / "deploy/configs/sd35m-apex.yaml")
    assert absolute_paths(hub).model.pretrained == hub.model.pretrained  # a Hub id stays
