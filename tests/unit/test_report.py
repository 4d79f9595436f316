"""Run folder: metrics.jsonl round trip, plots, image grids and the summary table."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from trainer.outputs.images import (
    FIRST_VS_LATEST_FILE,
    change_captions,
    save_first_eval,
    save_first_vs_latest,
    save_image_grid,
)
from trainer.outputs.plots import plot_run
from trainer.outputs.records import MetricsLog, read_metrics, records_of_kind, to_jsonable
from trainer.outputs.run_folder import RunFolder
from trainer.outputs.summary import summary_table

NAMES = ["pickscore", "deqa", "aesthetic", "ocr"]
P3 = ("learning_potential", "progress_need", "conflict_penalty")


def _synthetic_run(folder: RunFolder, steps: int = 20, p3: bool = True) -> None:
    """A K=4 run: train records every step, eval records at steps 0, 10, 20."""
    rng = np.random.default_rng(0)
    k = len(NAMES)
    for step in range(1, steps + 1):
        lam = rng.dirichlet(np.ones(k))
        record = {
            "step": step,
            "kind": "train",
            "epoch": step - 1,
            "reward_mean": np.array([20.0, 3.0, 5.0, 0.1]) + 0.05 * step + rng.normal(0, 0.1, k),
            "reward_std": np.abs(rng.normal(0.5, 0.1, k)),
            "weights": lam,
            "advantage_correlation": rng.uniform(-1, 1, k),
            "loss": float(rng.normal()),
            "kl": np.float32(abs(rng.normal(0, 1e-3))),
            "clip_fraction": np.float64(rng.uniform()),
            "time_sampling_s": 1.5,
            "time_scoring_s": 0.5,
            "time_update_s": 2.0,
        }
        if p3:
            record.update({term: rng.uniform(0, 1, k) for term in P3})
        folder.metrics.append(record)
    base = np.array([20.0, 3.0, 5.0, 0.1])
    for t, step in enumerate((0, 10, 20)):
        folder.metrics.append(
            {
                "step": step,
                "kind": "eval",
                "reward_mean": base + np.array([0.2, 0.1, -0.05, 0.05]) * t,
                "reward_std": np.array([1.0, 0.5, 0.4, 0.2]),
            }
        )


def _assert_png(path):
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 100 and img.height > 100


def test_run_folder_layout_and_config(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert (tmp_path / "run" / "eval").is_dir() and (tmp_path / "run" / "plots").is_dir()
    path = folder.write_config("model:\n  kind: tiny\n")
    assert path == tmp_path / "run" / "config.yaml"
    assert path.read_text() == "model:\n  kind: tiny\n"
    assert folder.eval_grid_path(12).name == "step_000012.png"
    RunFolder(tmp_path / "run")  # reopening an existing folder is fine


def test_metrics_round_trip_with_numpy_and_nan(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append(
        {
            "step": np.int64(3),
            "kind": "train",
            "reward_mean": np.array([1.0, np.nan, np.inf]),
            "weights": np.array([0.25, 0.75], dtype=np.float32),
            "loss": np.float32(0.5),
            "kl": float("nan"),
            "warming_up": np.bool_(True),
            "num_groups": np.int32(4),
            "conflict_matrix": np.eye(2),
            "nested": {"a": (np.float16(1.5), None)},
        }
    )
    log.append({"step": 4, "kind": "eval", "reward_mean": [2.0]})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "NaN" not in lines[0] and "Infinity" not in lines[0]
    first, second = read_metrics(tmp_path)
    assert first == {
        "step": 3,
        "kind": "train",
        "reward_mean": [1.0, None, None],
        "weights": [0.25, 0.75],
        "loss": 0.5,
        "kl": None,
        "warming_up": True,
        "num_groups": 4,
        "conflict_matrix": [[1.0, 0.0], [0.0, 1.0]],
        "nested": {"a": [1.5, None]},
    }
    assert second == {"step": 4, "kind": "eval", "reward_mean": [2.0]}


def test_torch_tensors_are_written(tmp_path):
    torch = pytest.importorskip("torch")
    log = MetricsLog(tmp_path / "m.jsonl")
    log.append({"step": 1, "kind": "train", "loss": torch.tensor(0.25, requires_grad=True)})
    assert read_metrics(tmp_path / "m.jsonl")[0]["loss"] == 0.25


@pytest.mark.parametrize(
    "record",
    [
        {"kind": "train"},
        {"step": 1},
        {"step": True, "kind": "x"},
        {"step": 1.0, "kind": "x"},
        {"step": 1, "kind": ""},
    ],
)
def test_records_need_step_and_kind(tmp_path, record):
    with pytest.raises(ValueError, match="needs"):
        MetricsLog(tmp_path / "m.jsonl").append(record)


def test_unserializable_value_names_its_key():
    with pytest.raises(TypeError, match=r"record\.extra\.obj"):
        to_jsonable({"extra": {"obj": object()}})


def test_read_skips_a_partial_last_line_but_not_a_broken_middle(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "kind": "train"}\n{"step": 2, "ki')
    assert read_metrics(path) == [{"step": 1, "kind": "train"}]
    path.write_text('{"step": 1, "kind": "train"}\n{"step": 2, "ki\n{"step": 3, "kind": "x"}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: not valid JSON"):
        read_metrics(path)


def test_records_of_kind_sorts_and_keeps_the_last_of_a_repeated_step():
    records = [
        {"step": 2, "kind": "train", "loss": 1.0},
        {"step": 1, "kind": "train", "loss": 0.0},
        {"step": 0, "kind": "eval"},
        {"step": 2, "kind": "train", "loss": 5.0},  # logged again after a resume
    ]
    train = records_of_kind(records, "train")
    assert [(r["step"], r["loss"]) for r in train] == [(1, 0.0), (2, 5.0)]


@pytest.mark.slow  # matplotlib
def test_plots_of_a_synthetic_run_are_valid_pngs(tmp_path):
    folder = RunFolder(tmp_path / "run")
    _synthetic_run(folder)
    paths = plot_run(read_metrics(folder.path), NAMES, folder.plots_dir)
    names = {p.name for p in paths}
    assert names == {
        "rewards.png",
        "weights.png",
        "steering.png",
        "priorities.png",
        "training.png",
        "timing.png",
        "eval.png",
        "eval_gains.png",
    }
    for path in paths:
        assert path.parent == folder.plots_dir
        _assert_png(path)


@pytest.mark.slow  # matplotlib
def test_plots_skip_missing_keys(tmp_path):
    # a static balancer has no P3 terms; a run without evaluation has no eval plot
    folder = RunFolder(tmp_path / "run")
    for step in range(1, 6):
        folder.metrics.append(
            {
                "step": step,
                "kind": "train",
                "reward_mean": [1.0, 2.0, 3.0, 4.0],
                "weights": [0.25] * 4,
            }
        )
    paths = folder.plot(NAMES)
    assert {p.name for p in paths} == {"rewards.png", "weights.png"}
    for path in paths:
        _assert_png(path)


@pytest.mark.slow  # matplotlib
def test_plots_without_p3_but_with_eval(tmp_path):
    folder = RunFolder(tmp_path / "run")
    _synthetic_run(folder, p3=False)
    names = {p.name for p in plot_run(read_metrics(folder.path), NAMES, folder.plots_dir)}
    assert "priorities.png" not in names and {"eval.png", "eval_gains.png"} <= names


@pytest.mark.slow  # matplotlib
def test_plots_reject_the_wrong_number_of_objectives(tmp_path):
    folder = RunFolder(tmp_path / "run")
    _synthetic_run(folder, steps=3)
    with pytest.raises(ValueError, match="4 values but there are 3 objectives"):
        plot_run(read_metrics(folder.path), NAMES[:3], folder.plots_dir)


def test_image_grid_size_and_captions(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 48, 3), dtype=np.uint8)
    captions = ["a cat", "a sign that says OPEN " * 8, "", "東京", "x" * 200]
    path = save_image_grid(images, captions, tmp_path / "eval" / "grid.png", cols=3)
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.width == 3 * 48
        assert img.height > 2 * 32 and (img.height % 2) == 0  # 2 rows of image + caption
        grid = np.asarray(img.convert("RGB"))
    cell_h = img.height // 2
    np.testing.assert_array_equal(grid[cell_h : cell_h + 32, 48:96], images[4])


def test_image_grid_without_captions_is_exact(tmp_path):
    images = np.zeros((4, 16, 16, 3), dtype=np.uint8)
    path = save_image_grid(images, None, tmp_path / "g.png", cols=8)
    with Image.open(path) as img:
        assert img.size == (4 * 16, 16)


@pytest.mark.parametrize(
    ("images", "captions"),
    [
        (np.zeros((2, 8, 8, 3), dtype=np.float32), None),
        (np.zeros((2, 8, 8), dtype=np.uint8), None),
        (np.zeros((0, 8, 8, 3), dtype=np.uint8), None),
        (np.zeros((2, 8, 8, 3), dtype=np.uint8), ["one"]),
    ],
)
def test_image_grid_rejects_bad_input(tmp_path, images, captions):
    with pytest.raises(ValueError):
        save_image_grid(images, captions, tmp_path / "g.png")


def test_summary_table(tmp_path):
    folder = RunFolder(tmp_path / "run")
    _synthetic_run(folder)
    table = summary_table(read_metrics(folder.metrics_path), NAMES)
    for name in NAMES:
        assert name in table
    assert "eval@0" in table and "eval@20" in table
    lines = table.splitlines()
    hv_line = next(line for line in lines if line.startswith("hypervolume"))
    # eval gains after two evals: (0.4, 0.4, -0.25, 0.5) base stds -> known hypervolume
    expected = (1 + 0.4) * (1 + 0.4) * (1 - 0.25) * (1 + 0.5)
    assert f"{expected:.4g}" in hv_line
    worst = next(line for line in lines if line.startswith("worst-objective"))
    assert "-0.25" in worst and "(aesthetic)" in worst
    # aesthetic only falls (share 1), the others only rise (0): mean 0.25
    assert any(line.startswith("seesaw index over 3 evals: 0.25") for line in lines)
    ocr_row = next(line for line in lines if line.startswith("ocr"))
    assert ocr_row.split()[5:7] == ["0.1", "0.5"]  # gain in raw units and in effect size
    assert folder.write_summary(NAMES).read_text() == table + "\n"


def test_summary_table_without_eval_or_weights():
    records = [{"step": 1, "kind": "train", "reward_mean": [1.0, None]}]
    table = summary_table(records, ["a", "b"])
    assert "hypervolume" in table and "n/a" in table
    row_a = next(line for line in table.splitlines() if line.startswith("a "))
    assert row_a.split()[1:3] == ["1", "1"] and row_a.split()[-1] == "n/a"


def test_first_vs_latest_pairs_each_first_image_with_the_latest_and_names_the_changes(tmp_path):
    rng = np.random.default_rng(0)
    before = rng.integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    after = rng.integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    first_scores = np.array([[0.5, 0.0, np.nan], [80.0, 90.0, 100.0]])
    later_scores = np.array([[1.0, 0.0, 0.25], [70.0, 90.0, 112.5]])
    assert save_first_vs_latest(tmp_path, after, later_scores, ["ocr", "colorfulness"]) is None
    save_first_eval(tmp_path, before, first_scores)
    path = save_first_vs_latest(tmp_path, after, later_scores, ["ocr", "colorfulness"], cols=3)
    assert path == tmp_path / FIRST_VS_LATEST_FILE
    sheet = np.asarray(Image.open(path).convert("RGB"))
    for i in range(3):  # left: the first evaluation's image, right: the latest, a 2-px bar
        x = i * (2 * 16 + 2)
        np.testing.assert_array_equal(sheet[:16, x : x + 16], before[i])
        np.testing.assert_array_equal(sheet[:16, x + 18 : x + 34], after[i])
    assert change_captions(first_scores, later_scores, ["ocr", "colorfulness"]) == [
        "ocr +0.5, color -10",
        "ocr +0, color +0",
        "ocr n/a, color +12.5",
    ]
    # another evaluation set (more images shown) than the first: no sheet, no error
    assert save_first_vs_latest(tmp_path, after[:2], later_scores[:, :2], ["a", "b"]) is None
