"""bench/e2e_alignment.py end to end on the session's Ray and reward app (~1-2 min on 2 cores).

Two one-epoch runs (static and apex) of the tiny random model against two closed-form
rewards: every run trains, evaluates, logs the sign agreement, and the bench writes its JSON,
its table's inputs and its figures. The numbers mean nothing at this size; the real benchmark
is ``python bench/e2e_alignment.py`` (docs/e2e-benchmark.md).
"""

from __future__ import annotations

import json

import pytest

from bench.e2e_alignment import main
from tests.integration.training_runs import REWARDS
from trainer.outputs.records import read_metrics, records_of_kind

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = [
    "balancer.options.warmup_steps=1",
    "training.groups_per_epoch=4",
    "training.images_per_prompt=4",
    "sampling.micro_batch_size=4",
    "evaluation.num_prompts=4",
    "scaling.num_workers=1",
    "scaling.cpu_threads=1",
]


def test_bench_runs_static_and_apex_on_the_running_app(reward_app, tmp_path):
    out = tmp_path / "e2e.json"
    argv = [
        "--config", "deploy/configs/local-random.yaml",
        "--rewards", ",".join(REWARDS),
        "--balancers", "static,apex",
        "--seeds", "0",
        "--epochs", "1",
        "--out", str(out),
        *TINY,
    ]  # fmt: skip
    code = main(argv, attach=True)
    data = json.loads(out.read_text())
    runs, summary = data["runs"], data["summary"]
    assert [(r["balancer"], r["seed"]) for r in runs] == [("static", 0), ("apex", 0)]
    assert all("error" not in r for r in runs), runs
    # colourfulness (0-100) spreads far more than the JPEG score (-kB / 500): it is the widest
    assert summary["widest_reward"] == "colorfulness"
    for run in runs:
        assert set(run["gains"]) == set(REWARDS)
        assert run["hypervolume"] is not None and run["seesaw"] is not None
        assert 0.0 <= run["hijack_share"] <= 1.0
        assert run["curves"]["eval_steps"] == [0, 1]  # the base model and the end
        train = records_of_kind(read_metrics(run["run_dir"]), "train")
        assert len(train[0]["sign_agreement"]) == len(REWARDS)
    names = {c["name"]: c for c in summary["checks"]}
    static_check = next(c for n, c in names.items() if n.startswith("static hijack"))
    assert static_check["passed"] == (runs[0]["hijack_share"] >= 0.9)
    apex_win = next(c for n, c in names.items() if n.startswith("apex beats"))
    assert apex_win["passed"] is None  # one seed cannot show a win in two
    assert code == (0 if summary["passed"] else 1)
    assert {p.rsplit("/", 1)[1] for p in summary["plots"]} == {
        "eval_curves.png",
        "priorities.png",
        "images_static_vs_apex.png",
    }
