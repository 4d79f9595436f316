"""The ``prompt_alignment`` reward on rendered scenes and hand-made images with known scores.

The pretraining scenes are the ground truth: every colour, shape and background the caption
grammar can name, with and without a word, scores near 1; each wrong attribute costs its
third of the reward.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from services.rewards import prompt_alignment as pa
from services.rewards.base import build_reward
from trainer.pretrain import scenes

SIZE = 64
CFG = pa.PromptAlignmentConfig()


@pytest.fixture(scope="module")
def reward():
    model = build_reward("prompt_alignment")
    model.load()
    return model


def _scene(shape="circle", colour="red", background="blue", word=None, radius=0.25):
    centre = (SIZE / 2, SIZE * 0.27 if word else SIZE / 2)
    return scenes.Scene(shape, colour, background, word, centre, radius * SIZE)


def _scores(scene: scenes.Scene, text: str | None = None) -> pa.AlignmentScores:
    caption = pa.parse_caption(text or scenes.caption(scene))
    return pa.alignment_scores(scenes.render(scene, SIZE), caption, CFG)


def test_every_scene_shape_has_a_fill_ratio():
    assert set(pa.FILL_RATIOS) == set(scenes.SHAPES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a red circle on a blue background", pa.Caption("red", "circle", "blue", False)),
        (
            "An  Orange TRIANGLE on an white background ",
            pa.Caption("orange", "triangle", "white", False),
        ),
        (
            'a green square on a black background with the word "SUN"',
            pa.Caption("green", "square", "black", True),
        ),
        (
            'an red square on a black background With The Word ""',
            pa.Caption("red", "square", "black", True),
        ),
    ],
)
def test_parse_caption(text, expected):
    assert pa.parse_caption(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        'a photo of a sign that says "OK"',
        "a red circle",
        "a pink circle on a blue background",  # not a palette colour
        "a red hexagon on a blue background",
        "a red circle on a blue background please",
        'a red circle on a blue background with the word "SUN',
        "the red circle on a blue background",
    ],
)
def test_unparseable_prompt_is_not_scored(reward, text):
    assert pa.parse_caption(text) is None
    assert reward.score([scenes.render(_scene())], [text]) == [None]


@pytest.mark.slow
def test_every_combination_scores_high():
    low = []
    for colour, background, shape in itertools.product(
        scenes.COLOURS, scenes.COLOURS, scenes.SHAPES
    ):
        if colour == background:
            continue
        for word, radius in [(None, 0.2), (None, 0.32), ("FOX", 0.13), ("MAP", 0.18)]:
            scene = _scene(shape, colour, background, word, radius)
            if (total := _scores(scene).total) < 0.9:
                low.append((scenes.caption(scene), radius, total))
    assert low == []


def test_random_scenes_score_high(reward):
    images, captions, _ = scenes.scene_batch(seed=3, count=64, size=SIZE)
    assert min(reward.score(list(images), captions)) >= 0.9


def test_scenes_with_uncaptioned_variation_still_score_what_they_name(reward):
    """Faded colours and lit backgrounds (`make pretrain` with `fade`, `light`) stay nearest their
    named colours and shapes, but below the exact palette: the reward has room there."""
    varied = scenes.Variation(fade=0.35, light=40)
    images, captions, _ = scenes.scene_batch(seed=3, count=128, size=SIZE, variation=varied)
    scored = [
        pa.alignment_scores(im, pa.parse_caption(c), CFG)
        for im, c in zip(images, captions, strict=True)
    ]
    assert min(s.colour for s in scored) > 0.5 and min(s.background for s in scored) > 0.5
    assert min(s.shape for s in scored) > 0.75
    exact, exact_captions, _ = scenes.scene_batch(seed=3, count=128, size=SIZE)
    assert (
        np.mean([s.total for s in scored])
        < np.mean(reward.score(list(exact), exact_captions)) - 0.05
    )


def test_wrong_background_loses_exactly_its_third():
    scene = _scene("square", "yellow", "purple")
    right = _scores(scene)
    wrong = _scores(scene, "a yellow square on a green background")
    assert (right.background, wrong.background) == (1.0, 0.0)
    assert (wrong.colour, wrong.shape) == (right.colour, right.shape)
    assert right.total - wrong.total == pytest.approx(1 / 3, abs=1e-12)


def test_wrong_colour_and_wrong_shape_score_zero_in_their_part():
    scene = _scene("circle", "red", "white")
    assert _scores(scene, "an orange circle on a white background").colour == 0.0
    square = _scores(_scene("square", "red", "white"), "a red circle on a white background")
    circle = _scores(scene)
    assert circle.shape > 0.9 and square.shape < circle.shape and square.shape < 0.1


def test_with_a_word_only_the_upper_half_is_searched():
    low = scenes.Scene("square", "green", "white", None, (SIZE / 2, SIZE * 0.75), 0.13 * SIZE)
    assert _scores(low).total >= 0.9
    tail = _scores(low, 'a green square on a white background with the word "ZOO"')
    assert (tail.background, tail.colour, tail.shape) == (1.0, 0.0, 0.0)


def test_blank_image_scores_low(reward):
    blank = np.full((SIZE, SIZE, 3), scenes.COLOURS["blue"], dtype=np.uint8)
    right_bg, wrong_bg = reward.score(
        [blank] * 2, ["a red circle on a blue background", "a red circle on a green background"]
    )
    assert right_bg == pytest.approx(1 / 3) and wrong_bg == 0.0


def test_noise_is_no_shape():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    for shape in scenes.SHAPES:
        caption = pa.parse_caption(f"a purple {shape} on a red background")
        assert pa.alignment_scores(noise, caption, CFG).shape < 0.1


def test_stray_specks_do_not_change_the_shape():
    scene = _scene("circle", "blue", "yellow", radius=0.2)
    image = scenes.render(scene, SIZE).copy()
    image[[4, 5, 58], [58, 6, 5]] = scenes.COLOURS["black"]
    specked = pa.alignment_scores(image, pa.parse_caption(scenes.caption(scene)), CFG)
    assert specked == _scores(scene)


def test_large_images_are_reduced_first():
    scene = _scene("triangle", "white", "black")
    small = scenes.render(scene, SIZE)
    big, work = (np.kron(small, np.ones((k, k, 1), dtype=np.uint8)) for k in (8, 2))
    assert big.shape == (512, 512, 3) and work.shape == (128, 128, 3)  # work_size 128
    caption = pa.parse_caption(scenes.caption(scene))
    assert pa.alignment_scores(big, caption, CFG) == pa.alignment_scores(work, caption, CFG)
    assert pa.alignment_scores(big, caption, CFG).total >= 0.9


def test_margin_scores():
    assert pa.colour_score(np.array(pa.COLOURS["red"]), "red") == 1.0
    red, orange = np.array(pa.COLOURS["red"], float), np.array(pa.COLOURS["orange"], float)
    path = [pa.colour_score(red + t * (orange - red), "red") for t in np.linspace(0, 1, 11)]
    assert all(a > b for a, b in zip(path, path[1:], strict=False))  # never flat
    assert path[5] == pytest.approx(0.5)  # half way: as close to orange
    assert path[9] > 0 and path[10] == 0.0  # on orange
    for shape, fill in pa.FILL_RATIOS.items():
        assert pa.shape_score(fill, shape) == 1.0
    assert 0.5 < pa.shape_score(0.9, "square") < 1 and 0 < pa.shape_score(0.9, "triangle") < 0.5


def test_the_cutoff_margin_is_flat_where_another_candidate_is_nearer():
    red, orange = np.array(pa.COLOURS["red"], float), np.array(pa.COLOURS["orange"], float)
    path = [pa.colour_score(red + t * (orange - red), "red", "cutoff") for t in (0, 0.3, 0.5, 0.8)]
    assert path[0] == 1.0 and 0 < path[1] < 1 and path[2] == pytest.approx(0.0, abs=1e-12)
    assert path[3] == 0.0
    # a rounded square (fill 0.86, nearer a circle's pi/4): cutoff gives it 0 whatever its
    # corners, the default rises as the fill nears 1, which is what a group's ranking needs
    fills = [0.84, 0.86, 0.88]
    assert [pa.shape_score(f, "square", "cutoff") for f in fills] == [0.0, 0.0, 0.0]
    shares = [pa.shape_score(f, "square") for f in fills]
    assert 0 < shares[0] < shares[1] < shares[2] < 0.5
    with pytest.raises(ValueError, match="unknown margin rule 'soft'"):
        pa.margin(1.0, 2.0, "soft")  # type: ignore[arg-type]


def test_the_config_picks_the_margin():
    # a drawn circle under a square's caption: nearer the circle prototype
    circle = scenes.render(_scene("circle", "red", "white"), SIZE)
    caption = pa.parse_caption(scenes.caption(_scene("square", "red", "white")))
    share = pa.alignment_scores(circle, caption, CFG)
    cutoff = pa.alignment_scores(circle, caption, pa.PromptAlignmentConfig(margin="cutoff"))
    assert cutoff.shape == 0.0 and 0 < share.shape < 0.5
    assert share.colour == cutoff.colour == 1.0  # exact colours score 1 under both
    with pytest.raises(ValueError, match=r"prompt_alignment\.margin"):
        build_reward("prompt_alignment", {"margin": "soft"})


def test_not_scorable_cases(reward):
    image = scenes.render(_scene())
    assert reward.score([image], ["a red circle on a red background"]) == [None]
    assert reward.score([image[:5, :5]], ["a red circle on a blue background"]) == [None]
    assert reward.score([image], [None]) == [None]
    reward.health_check()  # the probe's prompt is not a scene caption: None is healthy
    assert reward.score(
        [np.full((32, 32, 3), 127, np.uint8)], ['a photo of a sign that says "OK"']
    ) == [None]


def test_mismatch_and_bad_params_raise(reward):
    with pytest.raises(ValueError, match="prompts"):
        reward.score([scenes.render(_scene())], [])
    with pytest.raises(ValueError, match=r"prompt_alignment\.mask_threshold"):
        build_reward("prompt_alignment", {"mask_threshold": 0})
