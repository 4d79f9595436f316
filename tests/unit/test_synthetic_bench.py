"""The synthetic multi-objective benchmark runs in quick mode and its environment is sound.

The environment must actually show the failure mode it was built for (variance hijacking
under ``static``); these checks would fail if it did not, whatever the balancers do.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from trainer.core.balance import BALANCER_NAMES
from trainer.core.metrics import hypervolume, worst_gain

pytestmark = pytest.mark.slow  # every test reads one run of the benchmark (seconds)

BENCH = Path(__file__).resolve().parents[2] / "bench" / "synthetic_mo.py"
OCR, PICK, DEQA, AES = range(4)


def _load_bench():
    spec = importlib.util.spec_from_file_location("synthetic_mo", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load_bench()


@pytest.fixture(scope="module")
def result(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "nested" / "synthetic_mo.json"
    returned = bench.main(["--quick", "--out", str(out)])
    doc = json.loads(out.read_text())
    assert doc["table"].keys() == returned["table"].keys()
    return doc


def _numbers(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _numbers(value)
    elif isinstance(node, list):
        for value in node:
            yield from _numbers(value)
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield node


def test_every_balancer_runs_every_seed(result):
    seeds = result["settings"]["seeds"]
    assert set(result["table"]) == set(BALANCER_NAMES)
    for name in BALANCER_NAMES:
        assert [run["seed"] for run in result["per_seed"][name]] == list(range(seeds))
        for key in ("gains", "hypervolume", "worst_gain", "seesaw"):
            assert key in result["table"][name]
    assert set(result["paired"]["static"]) == set(BALANCER_NAMES)


def test_every_number_is_finite(result):
    numbers = list(_numbers({k: result[k] for k in ("table", "per_seed", "paired")}))
    assert numbers
    assert all(math.isfinite(x) for x in numbers)


def test_seeds_share_prompts_and_base_policy_across_balancers(result):
    """Common random numbers: the base evaluation is identical for every balancer."""
    reference = result["per_seed"]["static"]
    for name in BALANCER_NAMES:
        for run, ref in zip(result["per_seed"][name], reference, strict=True):
            assert run["base_mean"] == ref["base_mean"]
            assert run["base_std"] == ref["base_std"]


def test_reported_metrics_match_the_gains(result):
    for runs in result["per_seed"].values():
        for run in runs:
            assert run["hypervolume"] == pytest.approx(hypervolume(run["gains"]))
            assert run["worst_gain"] == pytest.approx(worst_gain(run["gains"]))
            assert 0.0 <= run["seesaw"] <= 1.0
            assert run["history"][0] == [0.0] * 4


def test_static_is_hijacked_by_the_wide_spread_objective(result):
    """Under a fixed weighted sum the OCR-like reward steers and gains most, every seed."""
    for run in result["per_seed"]["static"]:
        gains, steer = run["gains"], run["info"]["steer"]
        assert gains[OCR] > max(gains[PICK], gains[DEQA]) + 1.0
        assert steer[OCR] > 2 * max(steer[PICK], steer[DEQA])


def test_per_objective_normalization_lifts_the_low_spread_objectives(result):
    for static, dsan in zip(result["per_seed"]["static"], result["per_seed"]["dsan"], strict=True):
        assert min(dsan["gains"][PICK], dsan["gains"][DEQA]) > max(
            static["gains"][PICK], static["gains"][DEQA]
        )


def test_the_saturating_objective_loses_learning_potential(result):
    potential = result["table"]["apex"]["info"]["learning_potential"]
    assert potential[AES] < min(potential[OCR], potential[PICK], potential[DEQA])


def test_run_one_is_deterministic(bench):
    settings = bench.Settings(steps=12, eval_every=4, eval_prompts=8, eval_samples=4)
    env = bench.EnvConfig()
    first = bench.run_one("apex", 3, settings, env)
    second = bench.run_one("apex", 3, settings, env)
    assert first == second
    assert len(first["history"]) == 4


def test_variant_specs(bench):
    assert bench.parse_spec("apex") == ("apex", {})
    assert bench.parse_spec("apex:eta=0.03,tau_n=2") == ("apex", {"eta": 0.03, "tau_n": 2.0})
    for bad in ("nope", "apex:eta", "apex:not_an_option=1", "apex:eta=-1"):
        with pytest.raises(ValueError):
            bench.parse_spec(bad)


def test_cli_rejects_bad_counts(bench, tmp_path):
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--seeds", "0", "--out", str(tmp_path / "x.json")])
    assert list(tmp_path.iterdir()) == []
