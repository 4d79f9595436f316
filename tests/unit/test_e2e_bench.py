"""bench/e2e_alignment.py without Ray: argument parsing, the plan, statistics, checks, figures.

The end-to-end smoke run on the session's Ray is tests/integration/test_e2e_alignment.py.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.e2e_alignment import build_parser, make_plan
from bench.e2e_plots import write_plots
from bench.e2e_spec import SpecError, parse_balancers, parse_rewards, parse_seeds
from bench.e2e_summary import (
    check_results,
    collect_run,
    fill_hijack_share,
    format_checks,
    format_table,
    mean_se,
    summarize_runs,
    widest_reward,
)
from trainer.config import dump_config, load_config
from trainer.outputs.images import save_image_grid

ROOT = Path(__file__).resolve().parents[2]
LOCAL = [r.model_dump() for r in load_config(ROOT / "deploy/configs/local.yaml").rewards]


# --- --rewards, --balancers, --seeds ---------------------------------------------------------


def test_rewards_start_from_local_yaml_and_apply_weight_and_params():
    out = parse_rewards(
        "ocr:2:min_confidence=0.3,colorfulness,jpeg_compressibility::quality=80", LOCAL
    )
    ocr, colour, jpeg = out
    assert ocr["name"] == "ocr" and ocr["weight"] == 2.0
    assert ocr["params"] == {"engine": "onnx", "num_threads": 1, "min_confidence": 0.3}
    assert ocr["serving"] == {"num_cpus": 0.25, "max_batch_size": 32}  # local.yaml's
    assert colour["weight"] == 1.0 and colour["params"] == {}
    assert jpeg["params"] == {"scale_kb": 1.0, "quality": 80}  # an int, read as YAML
    other = parse_rewards("clipscore:0.5", LOCAL)[0]  # not in local.yaml: defaults
    assert other["weight"] == 0.5 and other["params"] == {} and other["serving"]["num_cpus"] > 0


@pytest.mark.parametrize(
    "text, words",
    [
        ("ocrr", ["'ocrr'", "did you mean 'ocr'"]),
        ("ocr:abc", ["'ocr:abc'", "weight 'abc' is not a number"]),
        ("ocr:-1", ["'ocr:-1'", ">= 0"]),
        ("ocr:inf", ["'ocr:inf'", "finite"]),
        ("ocr:1:engin=onnx", ["unknown parameter 'engin'", "did you mean 'engine'"]),
        ("ocr:1:num_threads=many", ["parameter 'num_threads'", "integer"]),
        ("ocr:1:engine=tesseract", ["parameter 'engine'", "'onnx'"]),
        ("ocr:1:engine", ["'engine' is not key=value"]),
        ("ocr,ocr", ["ocr more than once"]),
        ("ocr,", ["comma-separated"]),
        ("ocr:0,colorfulness:0", ["every weight is 0"]),
    ],
)
def test_bad_reward_entries_name_what_is_wrong(text, words):
    with pytest.raises(SpecError) as err:
        parse_rewards(text, LOCAL)
    for word in words:
        assert word in str(err.value)


def test_balancers_and_seeds():
    assert parse_balancers("static, apex-no-need") == ["static", "apex-no-need"]
    with pytest.raises(SpecError, match="did you mean 'apex'"):
        parse_balancers("static,apx")
    with pytest.raises(SpecError, match="twice"):
        parse_balancers("apex,apex")
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    with pytest.raises(SpecError, match="'x'"):
        parse_seeds("0,x")


def test_plan_covers_every_balancer_and_seed_and_never_deploys_per_run(tmp_path):
    args = build_parser().parse_args(
        ["--quick", "--epochs", "5", "--out", str(tmp_path / "e.json")]
    )
    plan = make_plan(args)
    pairs = [(r["balancer"], r["seed"]) for r in plan["runs"]]
    assert pairs == [("static", 0), ("apex", 0), ("static", 1), ("apex", 1)]
    for run in plan["runs"]:
        cfg = run["cfg"]
        assert not cfg.reward_service.deploy and cfg.balancer.name == run["balancer"]
        assert cfg.training.seed == run["seed"] and cfg.training.epochs == 5
        assert cfg.evaluation.every_n_epochs == 3  # evaluations at 0, 3 and 5
        assert Path(cfg.model.pretrained).is_absolute()
        assert run["run_dir"] == tmp_path / "e" / "runs" / f"{run['balancer']}-seed{run['seed']}"
    assert plan["app"].reward_service.deploy
    assert [r.name for r in plan["app"].rewards] == [r["name"] for r in LOCAL]
    full = make_plan(build_parser().parse_args(["--out", str(tmp_path / "f.json")]))
    assert len(full["runs"]) == 7 * 3 and full["runs"][0]["cfg"].training.epochs == 24


@pytest.mark.slow
def test_bad_arguments_exit_2_before_ray_is_imported():
    code = (
        "import sys; from bench.e2e_alignment import main\n"
        "for argv in (['--rewards', 'ocrr'], ['--rewards', 'ocr:1:engin=onnx'],"
        " ['--balancers', 'apx'], ['--seeds', 'a'], ['--epochs', '0'], ['training.lr=-1']):\n"
        "    print(main(argv))\n"
        "print('ray' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.split() == ["2"] * 6 + ["False"], out.stderr
    assert "did you mean 'ocr'" in out.stderr and "did you mean 'engine'" in out.stderr
    assert "training.lr" in out.stderr
    script = subprocess.run(
        [sys.executable, "bench/e2e_alignment.py", "--rewards", "colorfulness,pickscor"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert script.returncode == 2
    assert "'pickscor'" in script.stderr and "did you mean 'pickscore'" in script.stderr


# --- statistics and checks --------------------------------------------------------------------


def test_mean_and_standard_error():
    stat = mean_se([1.0, 2.0, 3.0])
    assert stat["mean"] == 2.0 and stat["se"] == pytest.approx(1 / math.sqrt(3)) and stat["n"] == 3
    assert mean_se([4.0, None, float("nan"), 6.0]) == {"mean": 5.0, "se": 1.0, "n": 2}
    one = mean_se([0.5])
    assert one["mean"] == 0.5 and math.isnan(one["se"])
    assert math.isnan(mean_se([])["mean"])


def _run(balancer, seed, hv, worst, agree_colour, std_colour=30.0, seesaw=0.3):
    return {
        "balancer": balancer,
        "seed": seed,
        "gains": {"ocr": worst, "colorfulness": 0.2},
        "hypervolume": hv,
        "worst": worst,
        "seesaw": seesaw,
        "hijack_share": None,
        "sign_agreement": {"ocr": 0.55, "colorfulness": agree_colour},
        "reward_std": {"ocr": 0.3, "colorfulness": std_colour},
    }


def _runs(static_share=0.95, dsan_share=0.6, apex_hv=(1.3, 1.3, 0.9)):
    runs = []
    for seed, hv in enumerate(apex_hv):
        runs.append(_run("static", seed, 1.0, -0.2, static_share))
        runs.append(_run("dsan", seed, 1.1, -0.1, dsan_share))
        runs.append(_run("apex", seed, hv, 0.1 if hv > 1 else -0.3, 0.62, seesaw=0.2))
    return runs


def _verdicts(runs):
    fill_hijack_share(runs, widest_reward(runs))
    checks = check_results(runs, summarize_runs(runs))
    out = {}
    for c in checks:
        suffix = "-win" if "beats" in c["name"] else "-seesaw" if "seesaw" in c["name"] else ""
        out[c["name"].split(" ")[0] + suffix] = c
    return out


def test_checks_pass_on_the_expected_picture():
    runs = _runs()
    assert widest_reward(runs) == "colorfulness"
    v = _verdicts(runs)
    assert runs[0]["hijack_share"] == 0.95
    assert v["static"]["passed"] and v["dsan"]["passed"] and v["apex-win"]["passed"]
    assert v["apex-win"]["detail"] == "won seeds [0, 1] of [0, 1, 2]"
    assert v["apex"]["checked"] is False and v["apex"]["passed"]  # report-only rows
    lines = format_checks(list(v.values()))
    assert any(line.startswith("PASS  [report-only] apex hijack") for line in lines)
    assert v["apex-seesaw"]["passed"] and not v["apex-seesaw"]["checked"]


@pytest.mark.parametrize(
    "kwargs, failing",
    [
        ({"static_share": 0.85}, "static"),
        ({"dsan_share": 0.8}, "dsan"),
        ({"apex_hv": (1.3, 0.9, 0.9)}, "apex-win"),
    ],
)
def test_each_checked_target_can_fail(kwargs, failing):
    v = _verdicts(_runs(**kwargs))
    assert v[failing]["passed"] is False and v[failing]["checked"]
    assert all(c["passed"] for name, c in v.items() if name != failing and c["checked"])


def test_checks_that_cannot_be_judged_are_skipped_not_failed():
    runs = [r for r in _runs() if r["seed"] == 0 and r["balancer"] != "dsan"]
    v = _verdicts(runs)
    assert v["apex-win"]["passed"] is None and v["dsan"]["passed"] is None
    assert v["static"]["passed"]


def test_widest_reward_comes_from_static_runs():
    runs = [_run("static", 0, 1, 0, 0.9, std_colour=0.1), _run("apex", 0, 1, 0, 0.6)]
    assert widest_reward(runs) == "ocr"  # apex's colourfulness spread does not count


def test_table_shows_mean_pm_se_and_the_legend():
    runs = _runs()
    fill_hijack_share(runs, "colorfulness")
    table = format_table(summarize_runs(runs), "colorfulness")
    static_row = next(line for line in table.splitlines() if line.startswith("static"))
    assert "+0.200±0.000" in static_row  # colourfulness gain, signed
    assert " 1.000±0.000" in static_row and " 0.950±0.000" in static_row  # hypervolume, hijack
    assert "hijack(colorfulness)" in table and "better: higher" in table


# --- a run folder and the figures -------------------------------------------------------------


def _fake_run_folder(path: Path, seed: int, rng) -> Path:
    cfg = load_config(ROOT / "deploy/configs/local-random.yaml", [
        "rewards=[{name: ocr}, {name: colorfulness}]"])  # fmt: skip
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(dump_config(cfg))
    records = []
    for step in range(4):
        agree = [0.5, 1.0 - step / 10]
        records.append({"kind": "train", "step": step, "weights": [0.5, 0.5],
                        "reward_std": [0.3, 30.0 + step], "sign_agreement": agree})  # fmt: skip
    for step, means in ((0, [0.6, 80.0]), (2, [0.5, 90.0]), (4, [0.66, 100.0])):
        records.append({"kind": "eval", "step": step, "reward_mean": means,
                        "reward_std": [0.3, 20.0]})  # fmt: skip
        images = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
        save_image_grid(images, None, path / "eval" / f"step_{step:06d}.png")
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_collect_run_reads_gains_agreement_and_curves(tmp_path):
    run = collect_run(_fake_run_folder(tmp_path / "r", 0, np.random.default_rng(0)), "apex", 0, 9)
    assert run["gains"] == pytest.approx({"ocr": 0.2, "colorfulness": 1.0})
    assert run["hypervolume"] == pytest.approx(1.2 * 2.0) and run["worst"] == pytest.approx(0.2)
    assert run["worst_objective"] == "ocr"
    # ocr: 0 -> -1/3 -> +0.2 effect sizes, 1/3 of its 13/15 movement backwards; colour: none
    assert run["seesaw"] == pytest.approx(0.5 * (1 / 3) / (13 / 15))
    assert run["sign_agreement"] == pytest.approx({"ocr": 0.5, "colorfulness": 0.85})
    assert run["reward_std"]["colorfulness"] == pytest.approx(31.5)
    assert run["curves"]["eval_steps"] == [0, 2, 4] and len(run["curves"]["weights"]) == 4


def test_figures_are_written(tmp_path):
    rng = np.random.default_rng(1)
    runs = [
        collect_run(_fake_run_folder(tmp_path / f"{b}{s}", s, rng), b, s, 1.0)
        for b in ("static", "apex")
        for s in (0, 1)
    ]
    written = write_plots(runs, tmp_path / "plots")
    assert sorted(p.name for p in written) == [
        "eval_curves.png",
        "images_static_vs_apex.png",
        "priorities.png",
    ]
    assert all(p.stat().st_size > 1000 for p in written)
    only_static = write_plots(runs[:2], tmp_path / "plots2")
    assert "images_static_vs_apex.png" not in {p.name for p in only_static}
