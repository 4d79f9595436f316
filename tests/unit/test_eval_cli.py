"""Unit tests of ``python -m services.eval``, run in-process on tiny rewards.

Covers the CSV (one row per image, columns, finite scores), both prompt-file formats, a file
that does not decode, ``--params`` reaching the reward, every bad-argument case exiting 2
with a message that names the problem, the models printed under the summary, and random-weight
models refused without ``--allow-random`` (in-process, and from a server's first answer).
Only ``--help`` runs in a subprocess.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.client import ScoreMatrix
from services.eval import EvalError, evaluate, main
from services.eval_inputs import list_images

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["b.png", "a.jpg", "c.PNG"]  # created out of order: rows must come sorted by name
SORTED = ["a.jpg", "b.png", "c.PNG"]
FAST = "jpeg_compressibility,aesthetic"
RANDOM = "--allow-random"  # the tiny aesthetic and pickscore have random weights


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in NAMES:
        pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
    (folder / "notes.txt").write_text("not an image, not listed")
    return folder


def run(argv: list[str]) -> int:
    """``main(argv)``, with argparse's own ``SystemExit`` turned into its code."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return int(exc.code or 0)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_jsonl(path: Path, entries: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


def test_scores_every_image_into_the_csv(images, tmp_path, capsys):
    out = tmp_path / "out.csv"
    argv = ["--rewards", FAST, "--images", images, "--out", out, "--batch-size", "2"]
    assert run([*argv, RANDOM]) == 0
    rows = read_csv(out)
    assert [r["file"] for r in rows] == SORTED
    assert list(rows[0]) == [
        "file",
        "prompt",
        "jpeg_compressibility",
        "aesthetic",
        "jpeg_compressibility_error",
        "aesthetic_error",
    ]
    for row in rows:
        assert row["prompt"] == ""
        for reward in FAST.split(","):
            assert math.isfinite(float(row[reward]))
            assert row[f"{reward}_error"] == ""
    table = capsys.readouterr().out
    assert "jpeg_compressibility" in table and "aesthetic" in table
    assert f"3 images -> {out}" in table
    scored_by = table.split("scored by:")[1]
    assert "jpeg_compressibility: closed form: PIL JPEG q=95 file size (no weights)" in scored_by
    assert "aesthetic: random-weight tiny CLIP + aesthetic MLP (test variant, seed 0)" in scored_by


def test_default_out_path_is_under_results(images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(["--rewards", "jpeg_compressibility", "--images", images]) == 0
    assert len(read_csv(tmp_path / "results" / "eval" / "imgs.csv")) == 3


def test_jsonl_prompts_match_by_file_name(images, tmp_path, capsys):
    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"file": "c.PNG", "prompt": "third", "seed": 3},  # extra keys are fine
            {"file": "some/dir/a.jpg", "prompt": 'a sign that says "hi"'},
            {"file": "b.png", "prompt": "second"},
            {"file": "gone.png", "prompt": "no image for this one"},
        ],
    )
    out = tmp_path / "out.csv"
    argv = ["--rewards", "pickscore,aesthetic", "--images", images, "--prompts", prompts]
    assert run([*argv, "--out", out, RANDOM]) == 0
    rows = read_csv(out)
    assert [r["prompt"] for r in rows] == ['a sign that says "hi"', "second", "third"]
    assert all(math.isfinite(float(r["pickscore"])) for r in rows)
    assert "1 prompt entries" in capsys.readouterr().err


def test_plain_text_prompts_follow_sorted_file_order(images, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first\nsecond\nthird\n\n")  # trailing blank lines are ignored
    out = tmp_path / "out.csv"
    argv = ["--rewards", "pickscore", "--images", images, "--prompts", prompts, "--out", out]
    assert run([*argv, RANDOM]) == 0
    assert [(r["file"], r["prompt"]) for r in read_csv(out)] == list(
        zip(SORTED, ["first", "second", "third"], strict=True)
    )


def test_an_undecodable_file_is_unscored_not_fatal(images, tmp_path):
    (images / "broken.png").write_bytes(b"\x89PNG but not really")
    out = tmp_path / "out.csv"
    assert run(["--rewards", FAST, "--images", images, "--out", out, RANDOM]) == 0
    broken = {r["file"]: r for r in read_csv(out)}["broken.png"]
    for reward in FAST.split(","):
        assert broken[reward] == ""
        assert broken[f"{reward}_error"].startswith("broken.png: not a recognized image")


def test_params_reach_the_reward(images, tmp_path):
    scores = {}
    for quality in (95, 10):
        out = tmp_path / f"q{quality}.csv"
        argv = ["--rewards", "jpeg_compressibility", "--images", images, "--out", out]
        assert run([*argv, "--params", f"jpeg_compressibility.quality={quality}"]) == 0
        scores[quality] = [float(r["jpeg_compressibility"]) for r in read_csv(out)]
    # a lower JPEG quality gives smaller files, i.e. higher (less negative) scores
    assert all(lo > hi for lo, hi in zip(scores[10], scores[95], strict=True))


def test_random_weights_are_refused_without_allow_random(images, tmp_path, capsys):
    out = tmp_path / "out.csv"
    assert (
        run(
            [
                "--rewards",
                "jpeg_compressibility,pickscore,aesthetic",
                "--images",
                images,
                "--prompts",
                _three_prompts(tmp_path),
                "--out",
                out,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "random weights would score pickscore, aesthetic" in err
    assert "pickscore: random-weight tiny CLIP (test variant, seed 0)" in err
    assert "--params pickscore.variant=pretrained aesthetic.variant=pretrained" in err
    assert "--allow-random" in err and not out.exists()


def test_real_and_closed_form_rewards_need_no_flag(images, tmp_path, capsys):
    """prompt_alignment is a closed-form rule; it also says why it cannot score a prompt."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle on a blue background\nnot a caption\na red square\n")
    out = tmp_path / "out.csv"
    argv = ["--rewards", "prompt_alignment", "--images", images, "--prompts", prompts]
    assert run([*argv, "--out", out]) == 0
    errors = [r["prompt_alignment_error"] for r in read_csv(out)]
    assert errors[0] == "" and errors[1] == errors[2]
    assert errors[1].startswith("caption outside the grammar 'a|an {colour} {shape} on")
    assert "prompt_alignment: closed form: pixel rule" in capsys.readouterr().out


class _ServerLike:
    """A scorer that answers as a server does: the model is known only from its answers."""

    rewards = ["pickscore"]
    descriptions: dict = {}

    def __init__(self, model: str | None):
        self.model = model

    def submit(self, images, prompts):
        matrix = ScoreMatrix(["pickscore"], np.full((1, len(images)), 0.5))
        matrix.models["pickscore"] = self.model
        future = Future()
        future.set_result(matrix)
        return future


def test_a_server_with_random_weights_is_refused_after_its_first_answer(images):
    files = list_images(images)
    with pytest.raises(EvalError, match="serve them with real weights"):
        evaluate(_ServerLike("random-weight tiny CLIP (test variant, seed 0)"), files, None, 2)
    result = evaluate(_ServerLike("random-weight tiny CLIP"), files, None, 2, allow_random=True)
    assert result["models"] == {"pickscore": "random-weight tiny CLIP"}
    result = evaluate(
        _ServerLike("yuvalkirstain/PickScore_v1 (pretrained weights)"), files, None, 2
    )
    assert np.isfinite(result["scores"]).all()
    assert evaluate(_ServerLike(None), files, None, 2)["models"] == {"pickscore": None}


def _three_prompts(tmp: Path) -> Path:
    (tmp / "three.txt").write_text("one\ntwo\nthree\n")
    return tmp / "three.txt"


def _missing_image_entry(folder: Path, tmp: Path) -> list:
    entries = [{"file": "a.jpg", "prompt": "x"}, {"file": "b.png", "prompt": "y"}]
    return ["--prompts", write_jsonl(tmp / "p.jsonl", entries)]


def _bad_json_line(folder: Path, tmp: Path) -> list:
    path = tmp / "p.jsonl"
    path.write_text('{"file": "a.jpg", "prompt": "x"}\n{not json\n')
    return ["--prompts", path]


def _too_few_lines(folder: Path, tmp: Path) -> list:
    (tmp / "p.txt").write_text("one\ntwo\n")
    return ["--prompts", tmp / "p.txt"]


def _blank_line(folder: Path, tmp: Path) -> list:
    (tmp / "p.txt").write_text("one\n\nthree\n")
    return ["--prompts", tmp / "p.txt"]


BAD_ARGS = {
    "missing dir": (["--images", "{tmp}/nowhere"], "is not a directory"),
    "no images": (["--images", "{tmp}"], "no .png/.jpg/.jpeg files"),
    "unknown reward": (["--rewards", "nope"], "unknown reward 'nope'; known rewards:"),
    "repeated reward": (["--rewards", "aesthetic,aesthetic"], "name each reward once"),
    "prompt needed": (["--rewards", "pickscore"], "pickscore read the prompt; pass --prompts"),
    "prompt file missing": (["--prompts", "{tmp}/none.jsonl"], "does not exist"),
    "image without entry": (_missing_image_entry, "has no prompt for 1 image(s): c.PNG"),
    "bad json line": (_bad_json_line, "line 2 is not valid JSON"),
    "line count": (_too_few_lines, "has 2 lines but 3 images were found"),
    "blank line": (_blank_line, "line 2 is blank"),
    "params syntax": (["--params", "quality=3"], "expected reward.key=value"),
    "params other reward": (["--params", "ocr.engine=onnx"], "'ocr' is not one of --rewards"),
    "params bad value": (["--params", "aesthetic.batch_size=0"], "aesthetic.batch_size"),
    "params with a server": (
        ["--url", "http://127.0.0.1:1", "--params", "aesthetic.seed=1"],
        "a server uses its own config",
    ),
    "batch size": (["--batch-size", "0"], "--batch-size must be >= 1"),
}


@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_bad_arguments_exit_2_with_the_reason(case, images, tmp_path, capsys):
    extra, message = BAD_ARGS[case]
    if callable(extra):
        extra = extra(images, tmp_path)
    extra = [str(a).replace("{tmp}", str(tmp_path)) for a in extra]
    argv = ["--rewards", FAST, "--images", images, "--out", tmp_path / "o.csv"]
    for flag in ("--rewards", "--images"):  # a case may replace a default argument
        if flag in extra:
            i = argv.index(flag)
            del argv[i : i + 2]
    assert run([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "o.csv").exists()


def test_url_and_grpc_are_exclusive(images, capsys):
    argv = ["--rewards", FAST, "--images", images, "--url", "http://x", "--grpc", "x:1"]
    assert run(argv) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_help_runs_as_a_module():
    out = subprocess.run(
        [sys.executable, "-m", "services.eval", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "--rewards" in out.stdout and "--prompts" in out.stdout
