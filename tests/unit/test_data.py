"""Prompt files (text, JSONL, Flow-GRPO's own files) and the deterministic prompt sampler."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.loop.data import PromptFileError, PromptSampler, load_prompt_records, load_prompts

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --- formats ----------------------------------------------------------------------------------


def test_text_skips_blank_lines_and_comments_and_strips(tmp_path):
    f = _write(
        tmp_path / "p.txt", "# header\n a cat \n\n   \n#another\na dog\r\nlast without newline"
    )
    assert load_prompts(f) == ["a cat", "a dog", "last without newline"]


def test_flow_grpo_text_files_read_unchanged(tmp_path):
    # Flow-GRPO's ocr/train.txt and pickscore/train.txt: one prompt a line, quotes inside
    ocr = _write(
        tmp_path / "ocr" / "train.txt",
        'A sign that reads "Welcome Home"\nA T-shirt with "Ray" printed on it\n',
    )
    pick = _write(tmp_path / "pickscore" / "train.txt", "a photo of a cat, 4k\nsunset, oil\n")
    assert load_prompts([ocr, pick]) == [
        'A sign that reads "Welcome Home"',
        'A T-shirt with "Ray" printed on it',
        "a photo of a cat, 4k",
        "sunset, oil",
    ]


def test_flow_grpo_geneval_metadata_keeps_prompt_and_metadata(tmp_path):
    rows = [
        {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a bench"},
        {"tag": "counting", "include": [{"class": "cat", "count": 2}], "prompt": "two cats"},
    ]
    f = _write(
        tmp_path / "geneval" / "train_metadata.jsonl",
        "\n".join(json.dumps(r) for r in rows) + "\n\n",
    )
    assert load_prompts(f) == ["a bench", "two cats"]
    records = load_prompt_records(f)
    assert records == rows
    assert records[1]["include"][0]["count"] == 2


def test_text_records_are_prompt_dicts(tmp_path):
    f = _write(tmp_path / "p.txt", "a\nb\n")
    assert load_prompt_records(f) == [{"prompt": "a"}, {"prompt": "b"}]


def test_auto_by_suffix_and_explicit_format(tmp_path):
    line = json.dumps({"prompt": "x"})
    as_json = _write(tmp_path / "p.json", line + "\n")
    as_txt = _write(tmp_path / "p.txt", line + "\n")
    assert load_prompts(as_json) == ["x"]
    assert load_prompts(as_txt) == [line]  # auto: a .txt is text, JSON and all
    assert load_prompts(as_txt, fmt="jsonl") == ["x"]
    assert load_prompts(as_json, fmt="text") == [line]


def test_several_files_concatenate_in_order(tmp_path):
    a = _write(tmp_path / "a.txt", "1\n2\n")
    b = _write(tmp_path / "b.jsonl", '{"prompt": "3"}\n')
    assert load_prompts([str(a), b]) == ["1", "2", "3"]


def test_utf8_bom_and_unicode(tmp_path):
    f = _write(tmp_path / "p.txt", "\ufeffcafé au lait\n東京の夜\n".encode())
    assert load_prompts(f) == ["café au lait", "東京の夜"]


def test_shipped_prompt_files_load():
    prompt_dir = REPO / "trainer" / "data" / "prompts"
    for path in sorted(prompt_dir.glob("*.txt")):
        prompts = load_prompts(path)
        assert prompts and all(p.strip() == p and p for p in prompts)


# --- errors name the file and line -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('{"prompt": "ok"}\n{"prompt": "a"\n', 2, "not valid JSON"),
        ('{"prompt": "ok"}\n\n["a list"]\n', 3, "expected a JSON object"),
        ('{"prompt": "ok"}\n"a string"\n', 2, "expected a JSON object"),
        ('{"tag": "counting", "include": []}\n', 1, 'no "prompt" key (keys: include, tag)'),
        ('{"prompt": "ok"}\n{"prompt": 3}\n', 2, '"prompt" must be a string, got int'),
        ('{"prompt": null}\n', 1, "got NoneType"),
        ('{"prompt": "  "}\n', 1, '"prompt" is empty'),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, text, line, reason):
    f = _write(tmp_path / "bad.jsonl", text)
    with pytest.raises(PromptFileError) as info:
        load_prompts(f)
    err = info.value
    assert str(err).startswith(f"{f}:{line}: ")
    assert reason in str(err)
    assert (err.path, err.line) == (str(f), line)
    assert isinstance(err, ValueError)


def test_invalid_utf8_names_the_line(tmp_path):
    f = _write(tmp_path / "p.txt", b"fine\n\xff\xfe broken\n")
    with pytest.raises(PromptFileError, match=rf"^{re.escape(str(f))}:2: not valid UTF-8"):
        load_prompts(f)


def test_missing_file_is_named(tmp_path):
    good = _write(tmp_path / "good.txt", "a\n")
    missing = tmp_path / "nope" / "train.txt"
    with pytest.raises(
        PromptFileError, match=rf"^{re.escape(str(missing))}: no such prompt file"
    ) as info:
        load_prompts([good, missing])
    assert info.value.line is None


def test_directory_is_not_a_prompt_file(tmp_path):
    with pytest.raises(PromptFileError, match="not a regular file"):
        load_prompts(tmp_path)


@pytest.mark.parametrize(
    ("name", "text"), [("e.txt", ""), ("c.txt", "# only\n\n"), ("e.jsonl", "\n")]
)
def test_empty_file_is_an_error_naming_it(tmp_path, name, text):
    f = _write(tmp_path / name, text)
    with pytest.raises(PromptFileError, match=rf"^{re.escape(str(f))}: no prompts in this file"):
        load_prompts(f)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="no prompt files"):
        load_prompts([])
    with pytest.raises(ValueError, match="format must be one of"):
        load_prompts(_write(tmp_path / "p.txt", "a\n"), fmt="csv")


# --- sampler -----------------------------------------------------------------------------------

PROMPTS = [f"prompt {i}" for i in range(12)]


def test_groups_depend_only_on_seed_and_epoch():
    a, b = PromptSampler(PROMPTS, 4, seed=7), PromptSampler(PROMPTS, 4, seed=7)
    forward = [a.groups(e) for e in range(9)]
    backward = [b.groups(e) for e in reversed(range(9))][::-1]
    assert forward == backward
    other_seed = PromptSampler(PROMPTS, 4, seed=8)
    assert [other_seed.groups(e) for e in range(9)] != forward


def test_resume_reproduces_the_epochs():
    run = PromptSampler(PROMPTS, 4, seed=3)
    seen = [run.groups(e) for e in range(10)]
    resumed = PromptSampler(list(PROMPTS), 4, seed=3)
    resumed.load_state_dict(json.loads(json.dumps(run.state_dict())))
    assert [resumed.groups(e) for e in range(5, 10)] == seen[5:]


@pytest.mark.parametrize(
    ("prompts", "groups", "seed"),
    [(PROMPTS[:-1], 4, 3), (PROMPTS, 6, 3), (PROMPTS, 4, 4), (PROMPTS[::-1], 4, 3)],
)
def test_load_state_dict_refuses_a_different_sampler(prompts, groups, seed):
    state = PromptSampler(PROMPTS, 4, seed=3).state_dict()
    with pytest.raises(ValueError, match="differs from the checkpoint"):
        PromptSampler(prompts, groups, seed).load_state_dict(state)


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 6, 12])
def test_every_prompt_once_per_pass_when_g_divides(groups):
    sampler = PromptSampler(PROMPTS, groups, seed=0)
    epochs_per_pass = len(PROMPTS) // groups
    passes = []
    for p in range(3):
        epochs = range(p * epochs_per_pass, (p + 1) * epochs_per_pass)
        chunk = [x for e in epochs for x in sampler.groups(e)]
        assert sorted(chunk) == sorted(PROMPTS)
        passes.append(chunk)
    assert passes[0] != passes[1]  # reshuffled every pass


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 30),
    g=st.integers(1, 40),
    seed=st.integers(-(2**40), 2**40),
    epochs=st.integers(1, 8),
)
def test_usage_is_balanced_for_any_sizes(n, g, seed, epochs):
    prompts = [f"p{i}" for i in range(n)]
    sampler = PromptSampler(prompts, g, seed)
    used = Counter(x for e in range(epochs) for x in sampler.groups(e))
    assert sum(used.values()) == g * epochs
    # a stream of whole passes: counts differ by at most one pass
    assert max(used.values()) - min(used.get(p, 0) for p in prompts) <= 1


def test_worker_split_is_contiguous_and_covers_the_epoch():
    sampler = PromptSampler(PROMPTS, 6, seed=1)
    epoch = sampler.groups(2)
    shares = [sampler.worker_groups(2, rank, 3) for rank in range(3)]
    assert [len(s) for s in shares] == [2, 2, 2]
    flat = [pair for share in shares for pair in share]
    assert flat == list(enumerate(epoch))
    assert shares[1] == [(2, epoch[2]), (3, epoch[3])]
    assert sampler.worker_groups(2, 0, 1) == list(enumerate(epoch))


@pytest.mark.parametrize(
    ("rank", "world", "match"),
    [(0, 4, "not divisible"), (3, 3, "rank <"), (-1, 2, "rank <"), (0, 0, "rank <")],
)
def test_worker_split_errors(rank, world, match):
    with pytest.raises(ValueError, match=match):
        PromptSampler(PROMPTS, 6, seed=1).worker_groups(0, rank, world)


@pytest.mark.parametrize(
    ("prompts", "groups", "epoch"),
    [
        ([], 2, 0),
        ("abc", 2, 0),
        ([1, 2], 2, 0),
        (PROMPTS, 0, 0),
        (PROMPTS, True, 0),
        (PROMPTS, 2, -1),
        (PROMPTS, 2, 1.5),
    ],
)
def test_sampler_rejects_bad_arguments(prompts, groups, epoch):
    with pytest.raises(ValueError):
        PromptSampler(prompts, groups, seed=0).groups(epoch)


def test_prompt_file_error_survives_pickling():
    """It crosses Ray process boundaries (a worker's error reaches the driver)."""
    import pickle

    from trainer.loop.data import PromptFileError

    err = pickle.loads(pickle.dumps(PromptFileError("a.txt", "empty", 3)))
    assert str(err) == "a.txt:3: empty" and err.line == 3
