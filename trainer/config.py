"""The one config tree of the trainer: pydantic sections, loaded from YAML with overrides.

Defaults are the paper setting of docs/method.md section 2 (SD3.5 Medium, Flow-GRPO, APEX);
``deploy/configs/local.yaml`` shrinks it to tiny CPU models. Each component receives its own
section, never the root. ``python -m trainer.config CONFIG.yaml [key=value ...]`` validates a
config and prints it resolved; see docs/config.md.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from common.config_loader import (
    ConfigError,
    apply_overrides,
    dump_yaml,
    read_yaml,
    run_cli,
    validate,
)
from trainer.batch_shape import batch_shape_problem
from trainer.config_performance import PerformanceConfig, performance_problems
from trainer.config_section import Section
from trainer.core.balance import BALANCER_NAMES, BalancerName, BalancerOptions
from trainer.core.sde import SdeType

__all__ = [
    "ConfigError",
    "PerformanceConfig",
    "Section",
    "TrainConfig",
    "balancer_kwargs",
    "dump_config",
    "load_config",
    "main",
]


class TinyModelConfig(Section):
    """Sizes of the tiny SD3 built in code (random weights) for CPU runs and tests."""

    transformer_layers: int = Field(2, ge=1, description="joint transformer blocks")
    attention_heads: int = Field(2, ge=1, description="heads per block")
    attention_head_dim: int = Field(16, ge=1, description="width = heads x head_dim")
    patch_size: int = Field(2, ge=1, description="latent patch size, as in SD3")
    latent_channels: int = Field(16, ge=1, description="VAE latent channels (as SD3: 16)")
    vae_block_channels: list[int] = Field(
        [8, 16, 16, 16], min_length=1, description="VAE blocks; downsampling 2^(len-1)"
    )
    clip_hidden_size: int = Field(32, ge=1, description="width of both tiny CLIP text encoders")
    clip_layers: int = Field(2, ge=1, description="layers of each CLIP text encoder")
    clip_heads: int = Field(2, ge=1, description="heads of each CLIP text encoder")
    clip_projection_dim: int = Field(32, ge=1, description="pooled size per CLIP (x2 in total)")
    t5_dim: int = Field(64, ge=1, description="d_model of the tiny T5 (joint attention dim)")
    t5_layers: int = Field(2, ge=1, description="layers of the tiny T5")
    t5_heads: int = Field(2, ge=1, description="heads of the tiny T5")
    t5_ff_dim: int = Field(64, ge=1, description="feed-forward size of the tiny T5")
    vocab_size: int = Field(1000, ge=16, description="vocabulary of the tiny tokenizers")
    seed: int = Field(0, description="seed of the random init; equal on every worker")

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyModelConfig:
        if self.clip_hidden_size % self.clip_heads:
            raise ValueError(
                f"clip_hidden_size={self.clip_hidden_size} must be divisible by "
                f"clip_heads={self.clip_heads}"
            )
        if self.t5_dim < 2 * self.clip_hidden_size:
            raise ValueError(
                f"t5_dim={self.t5_dim} must be >= 2 x clip_hidden_size={self.clip_hidden_size} "
                "(SD3 pads the two CLIP embeddings up to the T5 width)"
            )
        return self

    @property
    def downsampling(self) -> int:
        """Pixels per latent-patch side: VAE downsampling x patch size."""
        return 2 ** (len(self.vae_block_channels) - 1) * self.patch_size


class ModelConfig(Section):
    """Which SD3 to fine-tune: the tiny in-code model or a pretrained one (id or local path)."""

    kind: Literal["tiny", "pretrained"] = Field("pretrained", description="tiny: built in code")
    pretrained: str = Field(
        "stabilityai/stable-diffusion-3.5-medium",
        min_length=1,
        description="Hugging Face id or local directory (kind: pretrained)",
    )
    revision: str | None = Field(None, description="hub revision; None = default branch")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "bfloat16", description="dtype of the frozen weights (VAE stays float32)"
    )
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig, description="kind: tiny")


FLOW_GRPO_LORA_TARGETS = [
    "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
    "attn.to_k", "attn.to_out.0", "attn.to_q", "attn.to_v",
]  # fmt: skip


class LoraConfig(Section):
    """LoRA on the transformer; defaults are Flow-GRPO's SD3 recipe (r 32, alpha 64)."""

    rank: int = Field(32, ge=1, description="LoRA rank r")
    alpha: float = Field(64.0, gt=0, description="LoRA alpha (scale alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout")
    target_modules: list[str] = Field(
        default_factory=lambda: list(FLOW_GRPO_LORA_TARGETS),
        min_length=1,
        description="module name suffixes: both streams' attention projections, as Flow-GRPO",
    )
    init: Literal["gaussian", "default"] = Field(
        "gaussian", description="PEFT init_lora_weights (B = 0 either way)"
    )
    init_from: str | None = Field(None, description="start from a saved LoRA directory")


class SamplingConfig(Section):
    """Rollout and evaluation sampling: the SDE sampler of method.md section 2."""

    resolution: int = Field(512, ge=16, description="image side in pixels")
    num_steps: int = Field(10, ge=1, description="sampler steps in training rollouts")
    eval_num_steps: int = Field(40, ge=1, description="sampler steps in evaluation")
    guidance_scale: float = Field(4.5, ge=1, description="CFG scale (1 = no guidance)")
    eval_guidance_scale: float = Field(4.5, ge=1, description="CFG scale in evaluation")
    noise_level: float = Field(0.7, ge=0, description="SDE noise level a in rollouts")
    sde_type: SdeType = Field(
        "flow_grpo",
        description="the stochastic step: flow_grpo (Flow-GRPO's SDE) or cps "
        "(Coefficients-Preserving Sampling, Flow-CPS: the samples keep the flow's noise level, "
        "noise_level in [0, 1], the last step is deterministic and not trained)",
    )
    eval_noise_level: float = Field(0.0, ge=0, description="noise level in evaluation (ODE)")
    sde_window: int | None = Field(
        None,
        ge=1,
        description="SDE (and training) on only this many consecutive steps, a window drawn "
        "each epoch among the trained steps, the ODE elsewhere (MixGRPO, Flow-GRPO-Fast); "
        "None: every step is SDE (Flow-GRPO)",
    )
    max_sequence_length: int = Field(128, ge=1, le=512, description="T5 prompt tokens")
    micro_batch_size: int = Field(8, ge=1, description="images per sampler call per worker")


class TrainingConfig(Section):
    """Flow-GRPO optimization: batch shape, PPO-clip + KL loss, AdamW, EMA."""

    epochs: int = Field(1000, ge=1, description="sample-then-train epochs")
    groups_per_epoch: int = Field(48, ge=1, description="prompt groups G per epoch (global)")
    images_per_prompt: int = Field(24, ge=2, description="group size n")
    optimizer_steps_per_epoch: int = Field(2, ge=1, description="optimizer steps per epoch")
    micro_batch_size: int | None = Field(
        None, ge=1, description="samples per forward/backward; None = sampling.micro_batch_size"
    )
    timestep_fraction: float = Field(
        0.9, gt=0, le=1, description="share of the sampler steps trained: floor(f x steps)"
    )
    cfg: bool = Field(True, description="apply CFG in the training forward too")
    lr: float = Field(3e-4, gt=0, description="AdamW learning rate")
    lr_warmup_steps: int = Field(
        0, ge=0, description="optimizer steps of linear lr warm-up: step k uses lr (k+1)/N; 0: none"
    )
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="after the warm-up: constant lr, or a cosine decay to lr x lr_final_ratio "
        "at the last optimizer step (epochs x optimizer_steps_per_epoch)",
    )
    lr_final_ratio: float = Field(
        0.1, ge=0, le=1, description="cosine: the last step's lr as a share of lr"
    )
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    adam_eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    clip_range: float = Field(1e-4, gt=0, description="PPO ratio clip range eps")
    kl_beta: float = Field(0.04, ge=0, description="KL weight beta (paper: 0.01-0.04)")
    kl_scale: Literal["flow_grpo", "exact"] = Field(
        "flow_grpo",
        description="KL denominator: flow_grpo 2 std_t^2 (method.md, the paper's beta); "
        "exact 2 std_t^2 |dt| (the step Gaussians' KL, 1/|dt| larger)",
    )
    policy_loss: Literal["flow_grpo", "nft"] = Field(
        "flow_grpo",
        description="flow_grpo: PPO-clip on the SDE steps' log-prob ratios + KL (the paper); "
        "nft: DiffusionNFT's forward-process loss on the final samples (docs/learning.md)",
    )
    nft_beta: float = Field(1.0, gt=0, description="nft: mixing strength b of v+ and v-")
    nft_adv_clip: float = Field(
        5.0, gt=0, description="nft: advantages are clipped to +-c and mapped to r in [0, 1]"
    )
    nft_kl_beta: float = Field(
        0.0, ge=0, description="nft: weight of mean (v_theta - v_ref)^2 to the base model"
    )
    kl_reference: Literal["base", "ema"] = Field(
        "base",
        description="what the KL term holds the policy to: base, the model without LoRA "
        "(Flow-GRPO); ema, the LoRA's EMA (a reference that follows the policy slowly, "
        "TR-DPO's soft update); needs training.ema",
    )
    skip_zero_advantages: bool = Field(
        True, description="leave samples with advantage exactly 0 out of the loss (Flow-GRPO)"
    )
    ema: bool = Field(True, description="keep an EMA of the LoRA weights for eval/checkpoints")
    ema_decay: float = Field(0.9, ge=0, lt=1, description="EMA decay of the LoRA weights")
    ema_ramp: bool = Field(
        True, description="Flow-GRPO's ramp: step k decays by min((1+k)/(10+k), ema_decay)"
    )
    ema_update_every: int = Field(8, ge=1, description="optimizer steps between EMA updates")
    seed: int = Field(42, description="global seed; workers derive theirs from it")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        "bf16", description="autocast dtype of the trainable forward"
    )

    @model_validator(mode="after")
    def _ema_reference_needs_the_ema(self) -> TrainingConfig:
        if self.kl_reference == "ema" and not self.ema:
            raise ValueError(
                "kl_reference 'ema' needs training.ema=true (the EMA is the reference)"
            )
        return self

    @field_validator("adam_betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError(f"both betas must be in [0, 1), got {list(v)}")
        return v

    def train_timesteps(self, num_steps: int) -> int:
        """How many of ``num_steps`` sampler steps are trained (at least 1)."""
        return max(1, math.floor(self.timestep_fraction * num_steps + 1e-9))


class RewardConfig(Section):
    """One objective: a reward service by name, its base weight w[k] and its own params."""

    name: str = Field(
        ..., pattern=r"^[a-z][a-z0-9_-]*$", description="registered reward name, e.g. ocr"
    )
    weight: float = Field(1.0, ge=0, allow_inf_nan=False, description="base weight w[k]")
    params: dict[str, Any] = Field(default_factory=dict, description="passed to the reward")
    serving: dict[str, Any] = Field(
        default_factory=dict,
        description="Serve settings of its deployment (num_cpus, num_gpus, num_replicas, "
        "autoscaling, max_batch_size, runtime_env...; services/config.py)",
    )


class RewardServiceConfig(Section):
    """How the trainer reaches the reward services, and what a failing one does to a step."""

    app_name: str = Field("rewards", min_length=1, description="Serve application name")
    deploy: bool = Field(True, description="deploy the rewards from the trainer (else: running)")
    url: str | None = Field(
        None,
        description="with deploy false: reach running services over http(s)://HOST:PORT or "
        "grpc://HOST:PORT instead of Serve handles (then no Ray of theirs is joined)",
    )
    redeploy: bool = Field(
        False,
        description="deploy over a running app of the same name whose reward configs differ "
        "(refused otherwise, naming the difference)",
    )
    http_port: int = Field(8000, ge=1, le=65535, description="ingress port when deploying")
    grpc_port: int = Field(0, ge=0, le=65535, description="gRPC port when deploying; 0 = off")
    timeout_s: float = Field(300.0, gt=0, description="per reward call, per attempt")
    max_retries: int = Field(3, ge=0, description="retries of retryable failures per call")
    on_failure: Literal["fail", "wait"] = Field(
        "fail", description="a reward still down after retries: fail the step, or keep waiting"
    )
    wait_timeout_s: float = Field(1800.0, gt=0, description="with on_failure=wait: give up after")

    @model_validator(mode="after")
    def _url_means_running(self) -> RewardServiceConfig:
        if self.url is None:
            return self
        scheme = self.url.split("://", 1)[0] if "://" in self.url else ""
        if scheme not in ("http", "https", "grpc"):
            raise ValueError(
                f"url {self.url!r} must start with http://, https:// or grpc:// "
                "(e.g. http://127.0.0.1:8000 of make serve)"
            )
        if self.deploy:
            raise ValueError("url names running services: set deploy=false with it")
        return self


def _paper_rewards() -> list[RewardConfig]:
    return [RewardConfig(name=n) for n in ("pickscore", "deqa", "aesthetic", "ocr")]


class BalancerConfig(Section):
    """Which balancer turns rewards into advantages, and its knobs (method.md 3-5).

    Base weights live on ``rewards[*].weight``; ``options.weights`` may stay null or repeat
    them (proportionally), see :func:`balancer_kwargs`.
    """

    name: BalancerName = Field("apex", description=f"one of {', '.join(BALANCER_NAMES)}")
    options: BalancerOptions = Field(
        default_factory=BalancerOptions, description="trainer.core.balance.BalancerOptions"
    )


class CoordinatorConfig(Section):
    """The named Ray actor that balances the global batch each step."""

    actor_name: str = Field("apex-coordinator", min_length=1, description="named actor")
    max_restarts: int = Field(3, ge=-1, description="Ray actor restarts (-1 = unlimited)")
    metrics_jsonl: bool = Field(True, description="write every step's terms to metrics.jsonl")
    exchange_timeout_s: float = Field(
        1800.0, gt=0, description="how long a worker waits for the others' rewards of a step"
    )


class DataConfig(Section):
    """Prompt sets. Relative paths resolve against the working directory (the repo root)."""

    train_prompts: list[str] = Field(
        default_factory=lambda: [
            "trainer/data/prompts/ocr_train.txt",
            "trainer/data/prompts/general_train.txt",
        ],
        min_length=1,
        description="prompt files, concatenated; a single path is accepted",
    )
    eval_prompts: list[str] = Field(
        default_factory=lambda: ["trainer/data/prompts/ocr_eval.txt"],
        min_length=1,
        description="evaluation prompt files",
    )
    format: Literal["auto", "text", "jsonl"] = Field(
        "auto", description="text: one prompt a line; jsonl: {prompt: ...}; auto: by suffix"
    )

    @field_validator("train_prompts", "eval_prompts", mode="before")
    @classmethod
    def _one_path_is_a_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class EvaluationConfig(Section):
    """Periodic evaluation with the ODE sampler on the eval prompts."""

    every_n_epochs: int = Field(10, ge=0, description="0 = never")
    at_start: bool = Field(True, description="evaluate the base model before training")
    num_prompts: int | None = Field(None, ge=1, description="first N eval prompts; None = all")
    images_per_prompt: int = Field(
        1,
        ge=1,
        description="samples per eval prompt, each from its own noise: more narrows the "
        "evaluation's noise (the prompt list is repeated, so the first pass is the same as 1)",
    )
    num_images_saved: int = Field(16, ge=0, description="eval images written to the run dir")


class CheckpointConfig(Section):
    """LoRA + optimizer + coordinator state, written every few epochs."""

    dir: str | None = Field(None, description="None = <run folder>/checkpoints")
    every_n_epochs: int = Field(20, ge=0, description="0 = only at the end")
    keep: int = Field(5, ge=1, description="newest checkpoints kept")
    resume_from: str | None = Field(
        None,
        description="None: a new run; 'latest': the newest run under logging.run_dir with a "
        "checkpoint; or a run folder or checkpoint folder (trainer/runs.py)",
    )


class LoggingConfig(Section):
    """Run folder, console and metrics export."""

    run_dir: str = Field(
        "runs/apex", min_length=1, description="parent of the run folders <run_dir>/<start time>"
    )
    progress_bar: bool = Field(True, description="tqdm progress bars on the driver")
    prometheus: bool = Field(True, description="export trainer metrics through Ray")
    metrics_port: int | None = Field(
        8080, ge=1, le=65535, description="Ray's metrics export port of a local cluster"
    )
    log_every: int = Field(1, ge=1, description="optimizer steps between log lines")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    verbose: bool = Field(
        False, description="show Ray's, Serve's and Train's own logs on the console (--verbose)"
    )
    trackers: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="experiment trackers fed with metrics.jsonl's records: tensorboard "
        "(<run>/tensorboard/), wandb (WANDB_PROJECT), mlflow (MLFLOW_TRACKING_URI); [] for none",
    )

    @field_validator("trackers")
    @classmethod
    def _trackers_installed(cls, names: list[str]) -> list[str]:
        from trainer.coordinator.trackers import missing_trackers

        missing = missing_trackers(names)
        if missing:
            raise ValueError(
                f"tracker(s) {', '.join(missing)} not installed: pip install "
                f"{' '.join('tensorboardX' if m == 'tensorboard' else m for m in missing)}, "
                "or leave them out of logging.trackers"
            )
        return list(dict.fromkeys(names))


class ScalingConfig(Section):
    """Ray Train workers and the cluster they run on."""

    num_workers: int = Field(1, ge=1, description="trainer workers (1 GPU each with use_gpu)")
    use_gpu: bool = Field(True, description="one GPU per worker")
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict, description="extra Ray resources per worker, e.g. {CPU: 8}"
    )
    ray_address: str | None = Field(
        None, description="None: start a local cluster; 'auto': join one; or host:port"
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local cluster; None = all")
    cpu_threads: int | None = Field(
        None, ge=1, description="torch threads of a CPU worker; None = torch's default"
    )
    max_failures: int = Field(
        2, ge=-1, description="worker failures Ray Train restores from a checkpoint (-1: no cap)"
    )

    @model_validator(mode="after")
    def _num_cpus_needs_local(self) -> ScalingConfig:
        if self.num_cpus is not None and self.ray_address is not None:
            raise ValueError(
                f"num_cpus only sizes a local cluster, but ray_address={self.ray_address!r}; "
                "remove num_cpus or set ray_address: null"
            )
        return self


class TrainConfig(Section):
    """The root: one section per component."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="SD3 to fine-tune")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA adapter")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="sampler")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="optimization")
    rewards: list[RewardConfig] = Field(
        default_factory=_paper_rewards, min_length=1, description="objectives, in order"
    )
    reward_service: RewardServiceConfig = Field(
        default_factory=RewardServiceConfig, description="reaching the reward services"
    )
    balancer: BalancerConfig = Field(default_factory=BalancerConfig, description="balancer")
    coordinator: CoordinatorConfig = Field(default_factory=CoordinatorConfig, description="actor")
    data: DataConfig = Field(default_factory=DataConfig, description="prompt sets")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="eval")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="ckpts")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="logs, metrics")
    scaling: ScalingConfig = Field(default_factory=ScalingConfig, description="Ray resources")
    performance: PerformanceConfig = Field(
        default_factory=PerformanceConfig, description="fast paths; all off = eager"
    )

    @field_validator("rewards")
    @classmethod
    def _rewards_usable(cls, rewards: list[RewardConfig]) -> list[RewardConfig]:
        names = [r.name for r in rewards]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"reward names must be unique; repeated: {', '.join(dups)}")
        if sum(r.weight for r in rewards) <= 0:
            raise ValueError("at least one reward needs weight > 0")
        return rewards

    @model_validator(mode="after")
    def _cross_checks(self) -> TrainConfig:
        problems = _batch_problems(self) + _balancer_problems(self) + _resolution_problems(self)
        problems += _window_problems(self)
        problems += _cps_problems(self)
        problems += performance_problems(
            self.performance, self.lora.target_modules, self.scaling.use_gpu
        )
        if problems:
            raise ValueError("\n  - ".join(problems))  # one bullet per problem
        return self


def _batch_problems(cfg: TrainConfig) -> list[str]:
    t = cfg.training
    problem = batch_shape_problem(
        groups=t.groups_per_epoch,
        per_prompt=t.images_per_prompt,
        workers=cfg.scaling.num_workers,
        steps=t.optimizer_steps_per_epoch,
        sample_mb=cfg.sampling.micro_batch_size,
        train_mb=t.micro_batch_size,
    )
    return [problem] if problem else []


def _window_problems(cfg: TrainConfig) -> list[str]:
    window, steps = cfg.sampling.sde_window, cfg.sampling.num_steps
    trained = cfg.training.train_timesteps(steps)
    if window is None or window <= trained:
        return []
    return [
        f"sampling.sde_window = {window} exceeds the {trained} trained steps "
        f"(floor(training.timestep_fraction x sampling.num_steps {steps})); set sde_window <= "
        f"{trained}"
    ]


def _cps_problems(cfg: TrainConfig) -> list[str]:
    if cfg.sampling.sde_type != "cps":
        return []
    problems, steps = [], cfg.sampling.num_steps
    if cfg.sampling.noise_level > 1.0:
        problems.append(
            f"sampling.noise_level = {cfg.sampling.noise_level} with sampling.sde_type = cps: "
            "the cps sampler's noise level is in [0, 1]"
        )
    trained = cfg.training.train_timesteps(steps)
    if trained >= steps:
        problems.append(
            f"sampling.sde_type = cps makes the last of the {steps} steps deterministic, but "
            f"training.timestep_fraction trains all {trained}: set it to at most "
            f"{(steps - 1) / steps:.3g} (and sampling.num_steps >= 2) so that the last is not"
        )
    return problems


def _balancer_problems(cfg: TrainConfig) -> list[str]:
    opts, k = cfg.balancer.options, len(cfg.rewards)
    problems = []
    weights = [r.weight for r in cfg.rewards]
    if opts.weights is not None and not _proportional(opts.weights, weights):
        problems.append(
            f"balancer.options.weights = {list(opts.weights)} disagrees with "
            f"rewards[*].weight = {weights}; base weights live on the rewards: "
            "remove balancer.options.weights (or make it proportional to them)"
        )
    if opts.targets is not None and len(opts.targets) != k:
        problems.append(
            f"balancer.options.targets has {len(opts.targets)} entries but there are {k} "
            "rewards; give one target per reward, in order (null = relative mode)"
        )
    if k * opts.floor > 1:
        problems.append(
            f"balancer.options.floor = {opts.floor} x {k} rewards exceeds 1; "
            f"set balancer.options.floor <= {1 / k:.4g}"
        )
    return problems


def _proportional(a: Sequence[float], b: Sequence[float]) -> bool:
    if len(a) != len(b):
        return False
    sa, sb = sum(a), sum(b)
    return all(
        math.isclose(x / sa, y / sb, rel_tol=1e-6, abs_tol=1e-12) for x, y in zip(a, b, strict=True)
    )


def _resolution_problems(cfg: TrainConfig) -> list[str]:
    res = cfg.sampling.resolution
    if cfg.model.kind == "tiny":
        unit, why = cfg.model.tiny.downsampling, "model.tiny VAE downsampling x patch size"
    else:
        unit, why = 16, "SD3 VAE downsampling 8 x patch size 2"
    if res % unit == 0:
        return []
    near = sorted({v for v in ((res // unit) * unit, (res // unit + 1) * unit) if v > 0})
    return [
        f"sampling.resolution = {res} must be a multiple of {unit} ({why}); "
        f"use {' or '.join(map(str, near))}"
    ]


def balancer_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """Keyword options for ``make_balancer(cfg.balancer.name, len(cfg.rewards), **kwargs)``.

    ``weights`` always comes from ``rewards[*].weight`` (in reward order).
    """
    problems = _balancer_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems), problems)
    kwargs = cfg.balancer.options.model_dump()
    kwargs["weights"] = [float(r.weight) for r in cfg.rewards]
    return kwargs


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Load a YAML config (None = all defaults), apply dotted overrides, validate."""
    data = read_yaml(path) if path is not None else {}
    data, origins = apply_overrides(data, overrides, lambda: TrainConfig().model_dump(mode="json"))
    source = str(path) if path is not None else "(defaults)"
    if overrides:
        source += " with overrides " + " ".join(overrides)
    return validate(TrainConfig, data, source, origins)


def dump_config(cfg: TrainConfig) -> str:
    """The fully resolved config as YAML (for run folders); ``load_config`` reads it back."""
    return dump_yaml(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: validate a config with overrides and print it resolved; exit 2 when invalid.

    Runs the launch checks of :mod:`trainer.preflight` too (reward names and params, the
    resume target), so a config this accepts does not fail at ``make train``'s start.
    """
    from trainer.preflight import check_config  # imports the reward registry: CLI only

    def load_and_check(path: str, overrides: Sequence[str]) -> TrainConfig:
        cfg = load_config(path, overrides)
        check_config(cfg)
        return cfg

    return run_cli(argv, load_and_check, dump_config, prog="python -m trainer.config")


if __name__ == "__main__":
    sys.exit(main())
