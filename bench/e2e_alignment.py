"""End-to-end method evidence: ``make train``'s whole system once per balancer and seed.

Every run is the system ``make train`` runs (deploy/configs/local.yaml: models/shapes-sd3,
four real CPU rewards on Ray Serve, Ray Train workers, the coordinator actor), shortened to
``--epochs`` epochs with an evaluation at the start, half way and at the end. Ray and the
reward app start once in this process; each run is ``trainer.main.train`` with
``reward_service.deploy=false`` against that app. See docs/e2e-benchmark.md.

    python bench/e2e_alignment.py --quick            # static and apex, seeds 0,1 (<= 15 min)
    python bench/e2e_alignment.py                    # 7 balancers x 3 seeds (<= 90 min)
    python bench/e2e_alignment.py --balancers static,dsan --seeds 0 --epochs 8
    python bench/e2e_alignment.py --rewards ocr,jpeg_compressibility:2:scale_kb=1 training.lr=5e-4

It prints a table (mean +- SE over seeds of each effect-size gain, hypervolume, worst gain,
seesaw index and the hijacking share) and the checks, draws the figures, writes the JSON, and
exits 1 when a checked target fails (2 on a bad argument, before Ray starts).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# runnable as a script from anywhere; bench/ itself must not be on the path, where
# bench/common.py would shadow the top-level ``common`` package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from bench.common import free_port  # noqa: E402
from bench.e2e_spec import SpecError, parse_balancers, parse_rewards, parse_seeds  # noqa: E402
from trainer.config import ConfigError, TrainConfig, dump_config, load_config  # noqa: E402
from trainer.loop.data import PromptFileError, load_prompts  # noqa: E402
from trainer.outputs.records import to_jsonable  # noqa: E402

CONFIG = ROOT / "deploy" / "configs" / "local.yaml"
BALANCERS = "static,stage1,dsan,apex,apex-no-potential,apex-no-need,apex-no-conflict"
QUICK_BALANCERS, SEEDS, QUICK_SEEDS = "static,apex", "0,1,2", "0,1"
EPOCHS = 24  # 7 x 3 runs of ~24 x 6 s + 3 evaluations + start-up fit 90 min (the docs)
logger = logging.getLogger("bench.e2e_alignment")


def build_parser() -> argparse.ArgumentParser:
    """The command line (a contract: other checks call it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--balancers", help=f"comma-separated balancer names (default {BALANCERS})")
    p.add_argument("--rewards", help="name[:weight[:key=value...]],... (default: local.yaml's)")
    p.add_argument("--seeds", help=f"comma-separated training seeds (default {SEEDS})")
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs per run ({EPOCHS})")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_BALANCERS}, seeds {QUICK_SEEDS}")
    p.add_argument("--out", default="results/bench/e2e_alignment.json", help="FILE.json")
    p.add_argument("--config", default=str(CONFIG), help="base config (default local.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted config overrides for every run")
    return p


def make_plan(args: argparse.Namespace) -> dict[str, Any]:
    """Every run's validated config, and the reward app's; raises SpecError/ConfigError."""
    if args.epochs < 1:
        raise SpecError(f"--epochs {args.epochs}: give at least 1")
    out = ROOT / args.out
    if out.suffix != ".json":
        raise SpecError(f"--out {args.out!r}: give a FILE.json (run folders go beside it)")
    balancers = parse_balancers(args.balancers or (QUICK_BALANCERS if args.quick else BALANCERS))
    seeds = parse_seeds(args.seeds or (QUICK_SEEDS if args.quick else SEEDS))
    config = Path(args.config)
    config = config if config.is_absolute() else ROOT / config
    defaults = [r.model_dump() for r in load_config(config).rewards]
    rewards = parse_rewards(args.rewards, defaults) if args.rewards else defaults
    common = [
        "rewards=" + json.dumps(rewards),  # JSON is YAML flow style
        f"training.epochs={args.epochs}",
        f"evaluation.every_n_epochs={-(-args.epochs // 2)}",  # half way and at the end
        "evaluation.at_start=true",
        "checkpoint.every_n_epochs=0",  # only the final one: saves time, nothing resumes
        "logging.progress_bar=false",
    ]
    runs_dir = out.with_suffix("")
    runs = []
    for seed in seeds:
        for balancer in balancers:
            run_dir = runs_dir / "runs" / f"{balancer}-seed{seed}"
            specific = [
                f"balancer.name={balancer}",
                f"training.seed={seed}",
                f"logging.run_dir={run_dir}",
                f"coordinator.actor_name=e2e-{balancer}-seed{seed}",
                "reward_service.deploy=false",
            ]
            cfg = _load(config, [*common, *specific, *args.overrides])
            runs.append({"balancer": balancer, "seed": seed, "run_dir": run_dir, "cfg": cfg})
    app = [f"reward_service.http_port={free_port()}", f"logging.metrics_port={free_port()}"]
    app_cfg = _load(config, [*common, *args.overrides, "reward_service.deploy=true", *app])
    for files in (app_cfg.data.train_prompts, app_cfg.data.eval_prompts):
        load_prompts(files, app_cfg.data.format)
    return {"out": out, "runs_dir": runs_dir, "runs": runs, "app": app_cfg, "rewards": rewards}


def _load(config: Path, overrides: list[str]) -> TrainConfig:
    from trainer.main import absolute_paths

    with _cwd(ROOT):  # relative paths in the config mean the repository's
        return absolute_paths(load_config(config, overrides))


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def reward_app(cfg: TrainConfig, attach: bool) -> Iterator[None]:
    """Start Ray and deploy the rewards once for every run; with ``attach``, use the Ray this
    process is connected to and the app already running there (the integration test)."""
    if attach:
        yield
        return
    import ray
    from ray import serve

    from trainer.launch import deploy_rewards, init_ray

    # Ray's workers inherit the environment: make them import this checkout's code
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, paths)])
    started = time.perf_counter()
    local = init_ray(cfg)
    try:
        deploy_rewards(cfg, local=local)
        print(f"Ray and the reward app up in {time.perf_counter() - started:.0f} s", flush=True)
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """One training run in this process against the running app; its collected numbers, or
    ``error`` when it failed (the other runs go on)."""
    import ray

    from bench.e2e_summary import collect_run
    from trainer.main import train
    from trainer.outputs.run_folder import RunFolder

    cfg, run_dir = spec["cfg"], Path(spec["run_dir"])
    if run_dir.exists():  # this bench's own folder from an earlier call: metrics would append
        shutil.rmtree(run_dir)
    run = RunFolder(run_dir)
    run.write_config(dump_config(cfg))
    started = time.perf_counter()
    try:
        train(cfg, run)
        run.write_summary([r.name for r in cfg.rewards])
        result = collect_run(run_dir, spec["balancer"], spec["seed"], time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
        logger.exception("run %s seed %s failed", spec["balancer"], spec["seed"])
        result = {"balancer": spec["balancer"], "seed": spec["seed"], "error": repr(exc)}
        result["run_dir"] = str(run_dir)
    with contextlib.suppress(ValueError):  # the coordinator actor outlives train()
        ray.kill(ray.get_actor(cfg.coordinator.actor_name))
    return result


def report(plan: dict[str, Any], results: list[dict[str, Any]], seconds: float) -> dict:
    """Hijack shares, the per-balancer summary, the checks and the figures, as the JSON."""
    from bench.e2e_plots import write_plots
    from bench.e2e_summary import check_results, fill_hijack_share, summarize_runs, widest_reward

    done = [r for r in results if "error" not in r]
    widest = widest_reward(done)
    fill_hijack_share(done, widest)
    balancers = summarize_runs(done)
    checks = check_results(done, balancers)
    failed = [f"{r['balancer']}-seed{r['seed']}" for r in results if "error" in r]
    passed = not failed and all(c["passed"] is not False for c in checks if c["checked"])
    plots = write_plots(done, plan["runs_dir"] / "plots") if done else []
    summary = {
        "balancers": balancers,
        "widest_reward": widest,
        "checks": checks,
        "passed": passed,
        "failed_runs": failed,
        "plots": [str(p) for p in plots],
        "rewards": plan["rewards"],
        "seconds": round(seconds, 1),
    }
    return {"runs": results, "summary": summary}


def main(argv: list[str] | None = None, *, attach: bool = False) -> int:
    """Run every balancer x seed, print the table and checks, write the JSON; 0 when every
    checked target passes, 1 when one fails or a run failed, 2 on a bad argument."""
    args = build_parser().parse_args(argv)
    try:
        plan = make_plan(args)
    except (SpecError, ConfigError, PromptFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from bench.e2e_summary import format_checks, format_table

    started, results = time.perf_counter(), []
    plan["out"].parent.mkdir(parents=True, exist_ok=True)
    with reward_app(plan["app"], attach):
        for spec in plan["runs"]:
            results.append(run_one(spec))
            _print_run(results[-1])
            partial = {"runs": results, "summary": {"partial": True}}
            plan["out"].write_text(json.dumps(to_jsonable(partial), indent=2))
    data = report(plan, results, time.perf_counter() - started)
    summary = data["summary"]
    print(format_table(summary["balancers"], summary["widest_reward"]))
    print("\n".join(format_checks(summary["checks"])))
    for name in summary["failed_runs"]:
        print(f"FAIL  run {name} did not finish (see the log above)")
    plan["out"].write_text(json.dumps(to_jsonable(data), indent=2))
    print(f"took {summary['seconds']:.0f} s; wrote {plan['out']}; figures in {plan['runs_dir']}")
    return 0 if summary["passed"] else 1


def _print_run(res: dict[str, Any]) -> None:
    name = f"[{res['balancer']} seed {res['seed']}]"
    if "error" in res:
        print(f"{name} FAILED: {res['error']}", flush=True)
        return
    gains = ", ".join(f"{k} {v:+.2f}" for k, v in res["gains"].items() if v is not None)
    print(f"{name} {res['seconds']:.0f} s; effect-size gains: {gains}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
