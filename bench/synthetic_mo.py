"""Synthetic multi-objective benchmark: every balancer on the same toy policy-gradient problem.

What it measures: a Gaussian policy (``bench/synthetic_env.py``) is trained by group-relative
policy gradient against four rewards built to show both failure modes of a fixed weighted
sum: an OCR-like near-binary reward with a wide spread (variance hijacking), two smooth
low-spread rewards that conflict (seesaw), and a saturating one on a 1-10 scale. Every
balancer in ``BALANCER_NAMES`` runs with the same seeds, prompts, budget and learning rate.
At regular intervals the expected rewards are estimated on a fixed Monte-Carlo sample
(common random numbers); the report gives, mean and standard error over seeds, each
objective's gain in effect size (gain / the base policy's between-sample std), the
hypervolume of the gains (reference -1), the worst objective's gain and the seesaw index
(method.md section 6).

Run::

    python bench/synthetic_mo.py                 # 5 seeds x 600 steps, ~20 s on 2 CPU cores
    python bench/synthetic_mo.py --quick         # ~3 s smoke version (used by the tests)
    python bench/synthetic_mo.py --seeds 10 --steps 400 --out results/bench/x.json

The JSON (default ``results/bench/synthetic_mo.json``) holds the settings, every seed's
numbers and learning curves, the aggregated table, the seed-paired differences to
``static`` and ``dsan``, and the balancers' mean info terms (weights, learning
potential, progress need, conflict penalty, and how strongly each objective steers the
advantage).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
for _path in (_HERE, _HERE.parent):  # runnable as a script from anywhere, importable by tests
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from synthetic_env import (  # noqa: E402
    ACTION_DIM,
    OBJECTIVES,
    EnvConfig,
    EvalSet,
    GaussianPolicy,
    contexts,
    rewards,
)

from trainer.core.balance import BALANCER_NAMES, make_balancer  # noqa: E402
from trainer.core.metrics import (  # noqa: E402
    effect_size_gains,
    hypervolume,
    seesaw_index,
    worst_gain,
)

DEFAULT_OUT = Path("results/bench/synthetic_mo.json")
_INFO_TERMS = ("learning_potential", "progress_need", "conflict_penalty")


@dataclass(frozen=True)
class Settings:
    """Budget of one run; identical for every balancer."""

    seeds: int = 5
    steps: int = 600
    prompts_per_step: int = 16  # G
    samples_per_prompt: int = 16  # n
    lr: float = 0.03
    eval_every: int = 20
    eval_prompts: int = 256
    eval_samples: int = 16
    balancers: tuple[str, ...] = BALANCER_NAMES

    @classmethod
    def quick(cls, **overrides) -> Settings:
        """A ~3 s smoke version: fewer seeds, steps and evaluation samples."""
        base = {"seeds": 3, "steps": 120, "eval_every": 10, "eval_prompts": 128, "eval_samples": 8}
        return cls(**{**base, **overrides})


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"name"`` or ``"name:key=value,key=value"`` -> (balancer name, float options).

    Lets the benchmark try a variant of a balancer through its public options only, e.g.
    ``dwa:dwa_temperature=0.05``; trainer/core stays untouched.
    """
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"variant option {item!r} in {spec!r} must look like key=value")
        options[key.strip()] = float(value)
    make_balancer(name, len(OBJECTIVES), **options)  # fail fast on a bad name or option
    return name, options


def run_one(spec: str, seed: int, s: Settings, cfg: EnvConfig) -> dict:
    """Train one policy with balancer ``spec``; return its gains, metrics and info terms."""
    eval_set = EvalSet.build(np.random.default_rng([seed, 0]), s.eval_prompts, s.eval_samples)
    prompt_rng = np.random.default_rng([seed, 1])
    sample_rng = np.random.default_rng([seed, 2])
    policy = GaussianPolicy(cfg.policy_std, s.lr)
    name, options = parse_spec(spec)
    balancer = make_balancer(name, len(OBJECTIVES), **options)
    n, g = s.samples_per_prompt, s.prompts_per_step
    group_ids = np.repeat(np.arange(g), n)

    base_mean, base_std = eval_set.evaluate(cfg, policy)
    history = [base_mean]
    trace: dict[str, list[np.ndarray]] = {"weights": [], "steer": [], "flat_groups": []}
    unit = None  # first batch's mean within-group std: what "flat" is relative to
    for step in range(1, s.steps + 1):
        z = np.repeat(contexts(prompt_rng, g), n, axis=0)
        x = policy.sample(z, sample_rng.standard_normal((g * n, ACTION_DIM)))
        r = rewards(cfg, x, z, sample_rng.standard_normal((2, g * n)))
        adv, weights, info = balancer.step(r, group_ids)
        policy.update(z, x, adv)
        trace["weights"].append(weights)
        trace["steer"].append(_steer(adv, r, group_ids))
        group_std = r.reshape(len(OBJECTIVES), g, n).std(axis=2)
        unit = group_std.mean(axis=1) if unit is None else unit
        trace["flat_groups"].append((group_std < 0.05 * unit[:, None]).mean(axis=1))
        for term in _INFO_TERMS:
            if term in info and not info.get("warming_up", False):
                trace.setdefault(term, []).append(np.asarray(info[term]))
        if step % s.eval_every == 0 or step == s.steps:
            history.append(eval_set.evaluate(cfg, policy)[0])

    history = np.asarray(history)
    gains_hist = effect_size_gains(base_mean, base_std, history)
    gains = gains_hist[-1]
    return {
        "seed": seed,
        "gains": gains.tolist(),
        "raw_gains": (history[-1] - base_mean).tolist(),
        "hypervolume": hypervolume(gains),
        "worst_gain": worst_gain(gains),
        "seesaw": seesaw_index(gains_hist),
        "seesaw_per_objective": [seesaw_index(gains_hist[:, [k]]) for k in range(len(gains))],
        "peak_gains": gains_hist.max(axis=0).tolist(),
        "history": np.round(gains_hist, 5).tolist(),
        "base_mean": base_mean.tolist(),
        "base_std": base_std.tolist(),
        "info": {key: np.mean(vals, axis=0).tolist() for key, vals in trace.items() if vals},
        "final_weights": trace["weights"][-1].tolist(),
    }


def _steer(adv: np.ndarray, r: np.ndarray, group_ids: np.ndarray) -> np.ndarray:
    """Correlation of the advantage with each objective's group-centered reward.

    Which objectives actually decide the sign and order of the advantage: under variance
    hijacking one objective's correlation is near 1 and the others' near 0.
    """
    out = np.zeros(r.shape[0])
    counts = np.bincount(group_ids)
    for k in range(r.shape[0]):
        centered = r[k] - (np.bincount(group_ids, weights=r[k]) / counts)[group_ids]
        denom = np.sqrt((centered**2).sum() * ((adv - adv.mean()) ** 2).sum())
        out[k] = (centered * (adv - adv.mean())).sum() / denom if denom > 0 else 0.0
    return out


def aggregate(runs: list[dict]) -> dict:
    """Mean, std and standard error over seeds of every metric of one balancer."""
    metrics = {
        "gains": np.array([r["gains"] for r in runs]),
        "raw_gains": np.array([r["raw_gains"] for r in runs]),
        "hypervolume": np.array([r["hypervolume"] for r in runs]),
        "worst_gain": np.array([r["worst_gain"] for r in runs]),
        "seesaw": np.array([r["seesaw"] for r in runs]),
    }
    out = {}
    for key, vals in metrics.items():
        std = vals.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros_like(vals[0])
        out[key] = {
            "mean": np.mean(vals, axis=0).tolist(),
            "std": np.asarray(std).tolist(),
            "sem": (np.asarray(std) / np.sqrt(len(runs))).tolist(),
        }
    keys = runs[0]["info"].keys()
    out["info"] = {key: np.mean([r["info"][key] for r in runs], axis=0).tolist() for key in keys}
    return out


def paired_vs(per_seed: dict[str, list[dict]], reference: str) -> dict[str, dict]:
    """Seed-paired differences to ``reference`` (same seeds, prompts and noise).

    Per balancer and metric: mean and standard error of ``metric - metric(reference)`` and
    the number of seeds where the balancer is better (higher, lower for the seesaw index).
    """
    out = {}
    ref = per_seed[reference]
    for name, runs in per_seed.items():
        out[name] = {}
        for metric, sign in (("hypervolume", 1), ("worst_gain", 1), ("seesaw", -1)):
            d = np.array([a[metric] - b[metric] for a, b in zip(runs, ref, strict=True)])
            sem = d.std(ddof=1) / np.sqrt(d.size) if d.size > 1 else 0.0
            out[name][metric] = {
                "mean": float(d.mean()),
                "sem": float(sem),
                "better_seeds": int((sign * d > 0).sum()),
            }
    return out


LEGEND = """\
  every row is report only (no target); cells are mean ± standard error over seeds
  <objective>  effect-size gain: (expected reward after - before) / the base policy's
               between-sample std (higher is better)
  hypervol     prod over objectives of max(0, gain + 1): 1 = no change (higher is better)
  worst        the lowest objective's gain (higher is better)
  seesaw       share of the objectives' movement that went backwards (lower is better)"""


def _row(name: str, width: int, cells: list[str]) -> str:
    return f"{name:<{width}}" + "".join(cells)


def _width(names) -> int:
    return max(18, *(len(n) + 2 for n in names))


def format_table(table: dict[str, dict]) -> str:
    """The results as a fixed-width text table: mean ± standard error over seeds."""
    w = _width(table)
    cols = [*OBJECTIVES, "hypervol", "worst", "seesaw"]
    lines = [_row("balancer", w, [f"{c:>15}" for c in cols])]
    for name, agg in table.items():
        cells = [(agg["gains"]["mean"][k], agg["gains"]["sem"][k]) for k in range(len(OBJECTIVES))]
        cells += [(agg[m]["mean"], agg[m]["sem"]) for m in ("hypervolume", "worst_gain", "seesaw")]
        lines.append(_row(name, w, [f"{m:>9.3f} ±{e:>4.2f}" for m, e in cells]))
    return "\n".join(lines)


def format_info(table: dict[str, dict]) -> str:
    """Mean info terms per balancer: weights, P3 terms, steering and flat groups."""
    w = _width(table)
    lines = [_row("balancer", w, [f"{'term':<20}", *(f"{o:>11}" for o in OBJECTIVES)])]
    for name, agg in table.items():
        for term, vals in agg["info"].items():
            lines.append(_row(name, w, [f"{term:<20}", *(f"{v:>11.3f}" for v in vals)]))
    return "\n".join(lines)


def format_paired(paired: dict[str, dict], reference: str) -> str:
    """Seed-paired differences to the reference as text."""
    w = _width(paired)
    heads = ("d hypervol", "d worst", "d seesaw")
    lines = [_row("balancer", w, [f"{h:>24}" for h in heads])]
    for name, metrics in paired.items():
        if name != reference:
            cells = [
                f"{v['mean']:>+10.3f} ±{v['sem']:.3f} ({v['better_seeds']})"
                for v in metrics.values()
            ]
            lines.append(_row(name, w, cells))
    return "\n".join(lines)


def run(s: Settings, cfg: EnvConfig | None = None) -> dict:
    """Run every balancer over every seed and return the full result document."""
    cfg = cfg or EnvConfig()
    start = time.perf_counter()
    per_seed = {b: [run_one(b, seed, s, cfg) for seed in range(s.seeds)] for b in s.balancers}
    table = {name: aggregate(runs) for name, runs in per_seed.items()}
    references = [b for b in ("static", "dsan") if b in per_seed] or [s.balancers[0]]
    return {
        "objectives": list(OBJECTIVES),
        "settings": {**dataclasses.asdict(s), "balancers": list(s.balancers)},
        "env": dataclasses.asdict(cfg),
        "table": table,
        "paired": {ref: paired_vs(per_seed, ref) for ref in references},
        "per_seed": per_seed,
        "wall_seconds": time.perf_counter() - start,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="~3 s smoke version (tests)")
    p.add_argument("--seeds", type=int, help="number of seeds (default 5, quick 3)")
    p.add_argument("--steps", type=int, help="training steps per run (default 300, quick 120)")
    p.add_argument(
        "--variants",
        nargs="+",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="extra balancer variants through make_balancer options, e.g. dwa:dwa_temperature=0.05",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON path ({DEFAULT_OUT})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """CLI entry point: run, print the table, write the JSON; returns the result document."""
    args = parse_args(argv)
    overrides = {k: v for k, v in (("seeds", args.seeds), ("steps", args.steps)) if v is not None}
    for key, value in overrides.items():
        if value < 1:
            raise SystemExit(f"--{key} must be >= 1, got {value}")
    for spec in args.variants:
        try:
            parse_spec(spec)
        except ValueError as err:  # pydantic's ValidationError is a ValueError
            raise SystemExit(f"--variants {spec!r}: {err}") from err
    overrides["balancers"] = (*BALANCER_NAMES, *args.variants)
    s = Settings.quick(**overrides) if args.quick else Settings(**overrides)
    result = run(s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"effect-size gains after {s.steps} steps, mean ± s.e. over {s.seeds} seeds")
    print(format_table(result["table"]))
    print(LEGEND)
    print("\nmean info terms over training (after warm-up for the P3 terms)")
    print(format_info(result["table"]))
    for ref, paired in result["paired"].items():
        print(f"\nseed-paired difference to {ref}: mean ± s.e. (seeds where better)")
        print(format_paired(paired, ref))
    print(f"\nwall time {result['wall_seconds']:.1f} s; wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
