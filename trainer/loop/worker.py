"""The Ray Train worker loop: sample, score, balance through the coordinator, update.

Every worker runs :func:`train_loop_per_worker`. Per epoch: sample its share of the
prompt groups (scoring overlaps sampling), send the rewards to the coordinator and get
back its advantages, then run the PPO update with gradients averaged over all workers.
Rank 0 evaluates, logs through the coordinator and writes checkpoints; every rank calls
``ray.train.report`` at a checkpoint so that Ray Train can restore a failed run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.client import RetryPolicy, RewardClient
from trainer.config import RewardServiceConfig, TrainConfig
from trainer.coordinator.run_log import run_log_name
from trainer.loop import checkpoint as ckpt_io
from trainer.loop.data import PromptSampler, load_prompts
from trainer.loop.evaluation import eval_prompt_list, evaluate
from trainer.loop.gradient_conflict import measure_gradient_conflict
from trainer.loop.nft_update import nft_update
from trainer.loop.rollout_phase import sample_and_score
from trainer.loop.update import LoraEma, policy_update
from trainer.model import fast
from trainer.model.pipeline import (
    add_lora,
    load_lora_state_dict,
    load_pipeline,
    lora_parameters,
    save_lora,
)
from trainer.model.pipeline import lora_state_dict as lora_weights
from trainer.model.rollout import sde_window_steps, train_step_indices
from trainer.outputs.evaluation_metrics import eval_summary
from trainer.outputs.images import save_first_eval, save_first_vs_latest, save_image_grid
from trainer.outputs.run_folder import LORA_DIR

logger = logging.getLogger(__name__)


def reward_client(service: RewardServiceConfig) -> RewardClient:
    """Serve handles of ``service.app_name`` on this Ray, or ``service.url`` over HTTP/gRPC
    (bearer token from ``APEX_REWARD_TOKEN``, as the services read it)."""
    kwargs = {
        "timeout_s": service.timeout_s,
        "retry": RetryPolicy(max_retries=service.max_retries),
    }
    if service.url is None:
        return RewardClient.in_cluster(service.app_name, **kwargs)
    token = os.environ.get("APEX_REWARD_TOKEN") or None
    if service.url.startswith("grpc://"):
        target = service.url.removeprefix("grpc://")
        return RewardClient.over_grpc(target, token, app_name=service.app_name, **kwargs)
    return RewardClient.over_http(service.url, token, **kwargs)


class WorkerLoop:
    """State of one worker's run; :func:`train_loop_per_worker` drives it."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, rank: int, world: int, device):
        self.cfg, self.run_dir, self.rank, self.world = cfg, run_dir, rank, world
        import ray

        t = cfg.training
        torch.manual_seed(t.seed)  # identical base and LoRA init on every worker
        self.pipe = load_pipeline(cfg.model, device)
        add_lora(self.pipe.transformer, cfg.lora, seed=t.seed)
        fast.prepare(self.pipe, cfg.performance)  # compiled blocks, VAE dtype; off by default
        self.params = lora_parameters(self.pipe.transformer)
        self.optimizer = torch.optim.AdamW(
            self.params, lr=t.lr, betas=t.adam_betas, eps=t.adam_eps, weight_decay=t.weight_decay
        )
        self.ema = LoraEma(self.params, t.ema_decay, ramp=t.ema_ramp) if t.ema else None
        self.client = reward_client(cfg.reward_service)
        self.coordinator = ray.get_actor(cfg.coordinator.actor_name)
        self.run_log = ray.get_actor(run_log_name(cfg.coordinator.actor_name))
        self.rewards = [r.name for r in cfg.rewards]
        prompts = load_prompts(cfg.data.train_prompts, cfg.data.format)
        self.sampler = PromptSampler(prompts, t.groups_per_epoch, t.seed)
        eval_prompts = load_prompts(cfg.data.eval_prompts, cfg.data.format)
        self.eval_prompts = eval_prompt_list(
            eval_prompts, cfg.evaluation.num_prompts, cfg.evaluation.images_per_prompt
        )
        self.ckpt_root = Path(cfg.checkpoint.dir or run_dir / "checkpoints")
        self.start_epoch = 0
        self.optimizer_steps = 0
        self.eval_base: dict[str, list[float]] | None = None
        self.eval_history: list[list[float]] = []

    # --- checkpoints ----------------------------------------------------------------------

    def restore(self) -> None:
        """Continue from the newest checkpoint of this run, else ``checkpoint.resume_from``
        (``trainer.main`` resolves it to a checkpoint folder; ``latest`` here means this run's).

        A worker group restarted by Ray Train (``scaling.max_failures``) takes the newest
        checkpoint written in this job, which the coordinator remembers: Ray Train registers
        a reported checkpoint only when its controller next polls the workers, so after a
        crash right after a report ``ray.train.get_checkpoint()`` may hold an older one, or
        none. A group restarted before the first checkpoint starts over, coordinator too.
        """
        import ray
        import ray.train

        written = ray.get(self.run_log.last_checkpoint.remote())
        if self._on_every_rank(written is not None and ckpt_io.is_complete(written)):
            self._load(ckpt_io.load_checkpoint(written))
        elif (found := ray.train.get_checkpoint()) is not None:
            with found.as_directory() as directory:
                self._load(ckpt_io.load_checkpoint(directory))
        elif self.cfg.checkpoint.resume_from:
            wanted = self.cfg.checkpoint.resume_from
            path = ckpt_io.latest_checkpoint(self.ckpt_root) if wanted == "latest" else Path(wanted)
            if path is None:
                raise FileNotFoundError(f"checkpoint.resume_from=latest: none in {self.ckpt_root}")
            self._load(ckpt_io.load_checkpoint(path))
        elif self.rank == 0 and ray.get(self.coordinator.ping.remote()) > 0:
            self._restore_coordinator(None)
        if self.world > 1:
            torch.distributed.barrier()  # the coordinator is restored before anyone exchanges

    def _on_every_rank(self, flag: bool) -> bool:
        """True only if ``flag`` holds on every worker (so that all load the same checkpoint)."""
        if self.world == 1:
            return flag
        value = torch.tensor([int(flag)], device=self.pipe.transformer.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
        return bool(value.item())

    def _load(self, ckpt: ckpt_io.TrainerCheckpoint) -> None:

        load_lora_state_dict(self.pipe.transformer, ckpt.lora)
        if self.ema is not None and ckpt.ema is not None:
            self.ema.load_state_list([ckpt.ema[f"{i}"] for i in range(len(ckpt.ema))])
        self.optimizer.load_state_dict(ckpt.optimizer)
        ckpt_io.restore_rng_state(ckpt.rng)
        state = ckpt.state
        self.sampler.load_state_dict(state["sampler"])
        self.start_epoch = ckpt.epoch
        self.optimizer_steps = int(state["optimizer_steps"])
        self.eval_base = state.get("eval_base")
        self.eval_history = state.get("eval_history", [])
        if self.rank == 0:
            self._restore_coordinator(state["coordinator"])
        logger.info("worker %d resumed at epoch %d", self.rank, self.start_epoch)

    def _restore_coordinator(self, state: dict[str, Any] | None) -> None:
        """Rank 0: restore the coordinator (``None``: its initial state) and log a
        ``restore`` record naming the steps that will be balanced again."""
        import ray

        restored = ray.get(self.coordinator.load_state_dict.remote(state))
        step = restored.pop("step")
        ray.get(self.run_log.record.remote(step, "restore", restored))

    def checkpoint(self, epoch: int, metrics: dict[str, Any]) -> None:
        """Rank 0 writes the checkpoint; every rank reports it to Ray Train."""
        import ray
        import ray.train

        path = None
        if self.rank == 0:
            ema = None
            if self.ema is not None:
                ema = {f"{i}": t for i, t in enumerate(self.ema.state_list())}
            state = {
                "sampler": self.sampler.state_dict(),
                "optimizer_steps": self.optimizer_steps,
                "coordinator": ray.get(self.coordinator.state_dict.remote()),
                "eval_base": self.eval_base,
                "eval_history": self.eval_history,
            }
            path = ckpt_io.save_checkpoint(
                self.ckpt_root,
                ckpt_io.TrainerCheckpoint(
                    epoch=epoch,
                    lora=lora_weights(self.pipe.transformer),
                    ema=ema,
                    optimizer=self.optimizer.state_dict(),
                    rng=ckpt_io.rng_state(),
                    state=state,
                ),
                keep=self.cfg.checkpoint.keep,
            )
            ray.get(self.run_log.checkpoint_written.remote(str(path)))
        checkpoint = ray.train.Checkpoint.from_directory(str(path)) if path else None
        # one copy: under the run folder (Ray Train's run directory, see trainer.main) the
        # checkpoint is registered in place; a checkpoint.dir elsewhere is uploaded to it
        modes = ray.train.CheckpointUploadMode
        upload = modes.NO_UPLOAD if self.cfg.checkpoint.dir is None else modes.SYNC
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_upload_mode=upload)

    # --- one epoch ------------------------------------------------------------------------

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        """Sample, score, exchange with the coordinator and update; returns rank 0's record."""
        import ray

        cfg, n = self.cfg, self.cfg.training.images_per_prompt
        start = time.perf_counter()
        groups = self.sampler.worker_groups(epoch, self.rank, self.world)
        samples = [(gid, gid * n + j, prompt) for gid, prompt in groups for j in range(n)]
        generator = torch.Generator().manual_seed(cfg.training.seed * 1_000_003 + epoch)
        trained = cfg.training.train_timesteps(cfg.sampling.num_steps)
        if cfg.sampling.sde_window is None:  # Flow-GRPO: every step SDE, the first `trained`
            window, steps = None, train_step_indices(cfg.sampling.num_steps, trained, generator)
        else:  # MixGRPO / Flow-GRPO-Fast: SDE and training on this epoch's window only
            window = sde_window_steps(trained, cfg.sampling.sde_window, generator)
            steps = window
        data = sample_and_score(
            self.pipe,
            self.client,
            samples,
            epoch=epoch,
            seed=cfg.training.seed,
            sampling=cfg.sampling,
            rewards=self.rewards,
            service=cfg.reward_service,
            performance=cfg.performance,
            sde_steps=None if window is None else window.tolist(),
        )
        exchanged = time.perf_counter()
        reply = ray.get(
            self.coordinator.exchange.remote(epoch, self.rank, data.rewards, data.group_ids)
        )
        balanced = time.perf_counter()
        device = self.pipe.transformer.device
        rollout, embeds = data.rollout.to(device), data.embeds.to(device)
        with fast.for_update(cfg.performance):
            measured = self._measure_conflict(epoch, reply, rollout, embeds, steps, samples)
            updating = time.perf_counter()
            nft = cfg.training.policy_loss == "nft"
            update = nft_update if nft else policy_update
            stats = update(
                self.pipe.transformer,
                rollout,
                embeds,
                torch.as_tensor(reply["advantages"], dtype=torch.float32, device=device),
                steps,
                cfg=cfg.training,
                micro_batch_size=cfg.training.micro_batch_size or cfg.sampling.micro_batch_size,
                optimizer=self.optimizer,
                params=self.params,
                world_size=self.world,
                sample_indices=[i for _, i, _ in samples],
                ema=self.ema,
                optimizer_step_offset=self.optimizer_steps,
                **({"seed": cfg.training.seed * 1_000_003 + epoch} if nft else {}),
            )
        self.optimizer_steps += cfg.training.optimizer_steps_per_epoch
        tally = np.stack([data.tally.retries, data.tally.waits])
        retries, waits = self._sum_over_workers(tally, device)
        done = time.perf_counter()
        return {
            **reply["info"],  # rank 0: the balancer's terms for this step's train record
            "epoch": epoch,
            **vars(stats),
            **measured,  # a measured step's gradient cosines (its keys only then)
            "reward_retries": retries,
            "reward_waits": waits,
            "time_sampling_s": data.time_sampling_s,
            "time_scoring_s": data.time_scoring_s,
            "time_scoring_total_s": data.time_scoring_total_s,
            "time_coordinator_s": balanced - exchanged,
            "time_update_s": done - updating,
            "time_epoch_s": done - start,
        }

    def _measure_conflict(self, epoch, reply, rollout, embeds, steps, samples) -> dict[str, Any]:
        """On a step the coordinator marks as measured (its reply carries the per-objective
        advantages), the cosines of the objectives' LoRA gradients over the global batch
        (every rank takes part; rank 0 reports them to the coordinator), with the time it
        took; ``{}`` on any other step. Runs before the update: at the rollout policy."""
        ahat = reply.get("objective_advantages")
        if ahat is None:
            return {}
        import ray

        start = time.perf_counter()
        t = self.cfg.training
        device = self.pipe.transformer.device
        result = measure_gradient_conflict(
            self.pipe.transformer,
            rollout,
            embeds,
            torch.as_tensor(ahat, dtype=torch.float32, device=device),
            steps,
            params=self.params,
            micro_batch_size=t.micro_batch_size or self.cfg.sampling.micro_batch_size,
            guidance_scale=rollout.guidance_scale if t.cfg else 1.0,
            world_size=self.world,
            optimizer_steps=t.optimizer_steps_per_epoch,
            sample_indices=[i for _, i, _ in samples],
        )
        if self.rank == 0:
            ray.get(self.coordinator.report_gradient_cosines.remote(epoch, result.cosines))
        return {
            "gradient_cosine_matrix": result.cosines,
            "objective_gradient_norm": result.norms,
            "time_gradient_cosines_s": time.perf_counter() - start,
        }

    def _sum_over_workers(self, values: np.ndarray, device) -> list[list[int]]:
        """Element-wise sum of an int array over every worker (every rank must call it)."""
        if self.world > 1:
            summed = torch.as_tensor(values, dtype=torch.int64, device=device)
            torch.distributed.all_reduce(summed)
            values = summed.cpu().numpy()
        return np.asarray(values).astype(int).tolist()

    def evaluate(self, step: int) -> None:
        """Rank 0: ODE samples of the eval prompts (EMA weights when kept), scored and logged."""
        cfg = self.cfg
        swap = self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()
        with swap:
            result = evaluate(
                self.pipe,
                self.client,
                self.eval_prompts,
                sampling=cfg.sampling,
                seed=cfg.training.seed,
                rewards=self.rewards,
                service=cfg.reward_service,
                performance=cfg.performance,
            )
        means = [float(v) for v in result["reward_mean"]]
        first = self.eval_base is None
        if first:
            self.eval_base = {"mean": means, "std": [float(v) for v in result["reward_std"]]}
        self.eval_history.append(means)
        summary = eval_summary(self.eval_base["mean"], self.eval_base["std"], self.eval_history)
        shown = result["images"][: cfg.evaluation.num_images_saved]
        if len(shown):
            eval_dir = self.run_dir / "eval"
            save_image_grid(
                shown, self.eval_prompts[: len(shown)], eval_dir / f"step_{step:06d}.png"
            )
            scores = result["scores"][:, : len(shown)]
            if first:
                save_first_eval(eval_dir, shown, scores)
            else:
                save_first_vs_latest(eval_dir, shown, scores, self.rewards)
        record = {
            "reward_mean": result["reward_mean"],
            "reward_std": result["reward_std"],
            "unscorable_count": result["unscorable_count"],
            **{k: v for k, v in summary.items() if k != "objectives_used"},
        }
        self.run_log.record.remote(step, "eval", record)

    def export_lora(self) -> Path:
        """Rank 0, at the end: the adapter the evaluations scored (the EMA when kept) in
        diffusers' format, ``<run>/lora/``, for ``pipe.load_lora_weights`` and ``make sample``."""
        swap = self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()
        with swap:
            path = save_lora(self.pipe.transformer, self.run_dir / LORA_DIR)
        logger.info("LoRA in diffusers' format: %s", path)
        return path


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point; ``loop_config`` = {"config": TrainConfig dump, "run_dir": path}."""
    import ray
    import ray.train
    import ray.train.torch

    cfg = TrainConfig.model_validate(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if cfg.scaling.use_gpu else torch.device("cpu")
    if cfg.scaling.cpu_threads:
        torch.set_num_threads(cfg.scaling.cpu_threads)
    loop = WorkerLoop(cfg, Path(loop_config["run_dir"]), rank, world, device)
    loop.restore()
    evaluation, checkpoints = cfg.evaluation, cfg.checkpoint
    if rank == 0 and loop.start_epoch == 0 and evaluation.at_start and evaluation.every_n_epochs:
        loop.evaluate(step=0)
    last = cfg.training.epochs - 1
    for epoch in range(loop.start_epoch, cfg.training.epochs):
        record = loop.run_epoch(epoch)
        if rank == 0:
            ray.get(loop.run_log.record.remote(epoch, "train", record))
        completed = epoch + 1
        every = evaluation.every_n_epochs
        if rank == 0 and every and (completed % every == 0 or epoch == last):
            loop.evaluate(step=completed)
        every_ckpt = checkpoints.every_n_epochs
        if (every_ckpt and completed % every_ckpt == 0) or epoch == last:
            loop.checkpoint(completed, {"epoch": epoch, "loss": record["loss"]})
    if rank == 0:
        loop.export_lora()
    loop.client.close()
