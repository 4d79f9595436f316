"""Entry point behind ``make train``: config -> checks -> Ray -> rewards -> coordinator -> train.

``python -m trainer.main [CONFIG.yaml] [key=value ...]`` (default: deploy/configs/local.yaml).
Every config mistake fails before any process starts (exit 2, one line per mistake): the
tree, the prompt files, the reward names and params, the resume target
(:mod:`trainer.preflight`). Only then is the run folder created: a new
``<logging.run_dir>/<start time>``, or the run that ``checkpoint.resume_from`` names
(:mod:`trainer.runs`). It holds the resolved config, ``metrics.jsonl``, plots, evaluation
grids, checkpoints and ``summary.txt``; a start that fails before writing anything but the
config removes it again.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.config import ConfigError, TrainConfig, balancer_kwargs, dump_config, load_config
from trainer.config_help import keys_help
from trainer.console import configure_console, wants_verbose
from trainer.loop.data import PromptFileError, load_prompts
from trainer.outputs.images import FIRST_VS_LATEST_FILE
from trainer.outputs.run_folder import LORA_DIR, RunFolder
from trainer.preflight import check_config
from trainer.runs import RunPlan, create_run_folder, remove_if_unused

DEFAULT_CONFIG = "deploy/configs/local.yaml"
logger = logging.getLogger("trainer")


def prepare(argv: list[str]) -> tuple[TrainConfig, RunPlan]:
    """Parse ``[CONFIG] [key=value ...]``; check the config, prompt files, rewards and resume
    target up front, creating nothing. Returns the config and where the run goes."""
    path = DEFAULT_CONFIG
    if argv and "=" not in argv[0]:
        path, argv = argv[0], argv[1:]
    cfg = load_config(path, argv)
    for files in (cfg.data.train_prompts, cfg.data.eval_prompts):
        load_prompts(files, cfg.data.format)
    cfg = absolute_paths(cfg)
    return cfg, check_config(cfg)


def absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """Resolve relative paths against the launch directory: Ray workers run elsewhere."""

    def resolve(paths: list[str]) -> list[str]:
        return [str(Path(p).resolve()) for p in paths]

    data = cfg.data.model_copy(
        update={
            "train_prompts": resolve(cfg.data.train_prompts),
            "eval_prompts": resolve(cfg.data.eval_prompts),
        }
    )
    logging_cfg = cfg.logging.model_copy(
        update={"run_dir": str(Path(cfg.logging.run_dir).resolve())}
    )
    checkpoint = cfg.checkpoint
    if checkpoint.dir:
        checkpoint = checkpoint.model_copy(update={"dir": str(Path(checkpoint.dir).resolve())})
    model = cfg.model
    if model.kind == "pretrained" and Path(model.pretrained).expanduser().exists():
        # a local model folder; a Hugging Face id stays as it is
        local = str(Path(model.pretrained).expanduser().resolve())
        model = model.model_copy(update={"pretrained": local})
    return cfg.model_copy(
        update={"data": data, "logging": logging_cfg, "checkpoint": checkpoint, "model": model}
    )


def open_run(cfg: TrainConfig, plan: RunPlan) -> tuple[TrainConfig, RunFolder]:
    """Create the run folder (or reopen the resumed one) and write the config into it; the
    written config names the resumed checkpoint itself, so the workers need no search."""
    if plan.checkpoint is not None:
        checkpoint = cfg.checkpoint.model_copy(update={"resume_from": str(plan.checkpoint)})
        cfg = cfg.model_copy(update={"checkpoint": checkpoint})
    run = RunFolder(create_run_folder(plan))
    run.write_config(dump_config(cfg))
    return cfg, run


def train(cfg: TrainConfig, run: RunFolder, local: bool | None = None) -> None:
    """Start (or join) Ray, deploy or find the rewards, start the coordinator, then run the
    Ray Train job. ``local``: whether Ray was started for this run (None: start it here if
    needed); a run that joined a cluster never replaces the services running there."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from trainer.coordinator.actor import start_coordinator
    from trainer.coordinator.run_log import run_log_name, start_run_log
    from trainer.launch import check_room, deploy_rewards, init_ray
    from trainer.loop.worker import train_loop_per_worker
    from trainer.outputs.progress import ProgressReporter

    names = [r.name for r in cfg.rewards]
    started = init_ray(cfg)
    local = started if local is None else local
    deploy_rewards(cfg, local=local)
    check_room(cfg, joined_for_rewards=not local and cfg.scaling.ray_address is None)
    coordinator = start_coordinator(
        cfg.coordinator.actor_name,
        cfg.coordinator.max_restarts,
        balancer=cfg.balancer.name,
        objectives=names,
        num_workers=cfg.scaling.num_workers,
        run_dir=str(run.path),
        balancer_options=balancer_kwargs(cfg),
        exchange_timeout_s=cfg.coordinator.exchange_timeout_s,
    )
    run_log = start_run_log(
        run_log_name(cfg.coordinator.actor_name),
        cfg.coordinator.max_restarts,
        objectives=names,
        run_dir=str(run.path),
        write_metrics=cfg.coordinator.metrics_jsonl,
        export_metrics=cfg.logging.prometheus,
        trackers=cfg.logging.trackers,
    )
    ray.get([coordinator.ping.remote(), run_log.latest_records.remote()])  # both are up
    scaling = cfg.scaling
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "run_dir": str(run.path)},
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker=scaling.resources_per_worker or None,
        ),
        # Ray Train's run directory is the run folder itself: the checkpoints the workers
        # write to <run>/checkpoints are then registered where they lie, not copied
        run_config=RunConfig(
            name=run.path.name,
            storage_path=str(run.path.resolve().parent),
            failure_config=FailureConfig(max_failures=scaling.max_failures),
        ),
    )
    progress = ProgressReporter(
        _latest_records(run_log), names, cfg.training.epochs, cfg.logging.progress_bar
    )
    try:
        trainer.fit()
    finally:
        progress.close()


def _latest_records(run_log: Any) -> Callable[[], dict | None]:
    """What the progress bar polls: the run log's newest train and eval records."""
    import ray

    def fetch() -> dict | None:
        try:
            return ray.get(run_log.latest_records.remote(), timeout=5)
        except Exception:  # the run log may be restarting; try again next tick
            return None

    return fetch


def fit(config: str | Path = DEFAULT_CONFIG, *overrides: str) -> RunFolder:
    """The Python API of ``make train``: run a config with dotted overrides; returns the run
    folder (``summary.txt``, ``metrics.jsonl``, ``lora/``, ...).

    Raises :class:`~trainer.config.ConfigError` (or ``PromptFileError``) for a bad config
    before anything starts, :class:`~trainer.launch.LaunchError` when the cluster or the
    running reward services cannot serve the run.
    """
    cfg, plan = prepare([str(config), *overrides])
    return run_job(cfg, plan)


def run_job(
    cfg: TrainConfig, plan: RunPlan, announce: Callable[..., None] | None = None
) -> RunFolder:
    """Open the run folder, train, stop what was started, write plots and the summary.

    ``announce(message, error=False)`` hears the run folder (and its removal when a start
    fails before writing anything); the CLI prints it.
    """
    say = announce or (lambda message, error=False: logger.info("%s", message))
    cfg, run = open_run(cfg, plan)
    resuming = f" (resuming {plan.checkpoint})" if plan.checkpoint else ""
    say(f"run folder: {run.path}{resuming}")
    local = False
    try:
        from trainer.launch import init_ray

        local = init_ray(cfg)
        train(cfg, run, local=local)
    except BaseException:
        if plan.folder is None and remove_if_unused(run.path):
            say(f"removed {run.path}: the run failed before writing to it", error=True)
        raise
    finally:
        _shutdown(local=local)
    names = [r.name for r in cfg.rewards]
    run.plot(names)
    run.write_summary(names)
    return run


def main(argv: list[str] | None = None) -> int:
    """Run a training job; exit 2 on a bad config or prompt file."""
    verbose, args = wants_verbose(list(sys.argv[1:] if argv is None else argv))
    if args and args[0] in ("-h", "--help"):
        print(
            "usage: python -m trainer.main [CONFIG.yaml] [key=value ...]\n"
            f"  CONFIG defaults to {DEFAULT_CONFIG}; overrides are dotted config keys, e.g.\n"
            "  training.epochs=2 balancer.name=static scaling.ray_address=auto\n"
            "  --verbose shows Ray's, Serve's and Train's own logs\n"
            "  (python -m trainer.config CONFIG prints a config resolved)\n\n"
            "config keys (default, meaning; rewards.N.* for the N-th reward):\n"
            + keys_help(TrainConfig)
        )
        return 0
    configure_console(verbose)
    try:
        cfg, plan = prepare(args)
    except (ConfigError, PromptFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_console(cfg.logging.verbose)  # the config file may ask for it too
    from trainer.launch import LaunchError

    def announce(message: str, error: bool = False) -> None:
        print(message, file=sys.stderr if error else sys.stdout, flush=True)

    started = time.perf_counter()
    try:
        run = run_job(cfg, plan, announce)
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(run.summary_path.read_text())
    print(f"took {time.perf_counter() - started:.0f} s; plots in {run.plots_dir}")
    compared = run.eval_dir / FIRST_VS_LATEST_FILE
    if compared.is_file():
        print(f"first evaluation beside the last, with each reward's change: {compared}")
    lora = run.path / LORA_DIR
    if lora.is_dir():
        print(f"LoRA for diffusers: {lora}  (images: make sample RUN={run.path})")
    print(f"run folder: {run.path}")
    return 0


def _shutdown(local: bool) -> None:
    """Disconnect from Ray; a local cluster this run started goes down with everything on it
    (Serve included: ``serve.shutdown()`` first only added a ``graceful_shutdown failed``
    line), a joined cluster and its services stay up."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
