"""The config tree: shipped YAMLs load, overrides apply, errors name the field and the fix."""

import re
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import BaseModel

from trainer.batch_shape import batch_shape_problem
from trainer.config import (
    ConfigError,
    TrainConfig,
    balancer_kwargs,
    dump_config,
    load_config,
)
from trainer.core.balance import BALANCER_NAMES, make_balancer

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "deploy" / "configs").glob("*.yaml"))
# the random-weight config: the loader's tests use it as their base (its numbers are fixed)
LOCAL = ROOT / "deploy" / "configs" / "local-random.yaml"
SMALL_MODEL = ROOT / "deploy" / "configs" / "local.yaml"  # what make train runs
PAPER = ROOT / "deploy" / "configs" / "sd35m-apex.yaml"


def error_of(path=None, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


# --- shipped configs -------------------------------------------------------------------


def test_both_shipped_configs_exist():
    assert LOCAL in CONFIGS and PAPER in CONFIGS and SMALL_MODEL in CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_deploy_config_loads_and_its_prompt_files_exist(path):
    cfg = load_config(path)
    for prompt_file in cfg.data.train_prompts + cfg.data.eval_prompts:
        assert (ROOT / prompt_file).is_file(), prompt_file


def test_local_config_aligns_the_small_model_on_cpu():
    cfg = load_config(SMALL_MODEL)
    assert cfg.model.kind == "pretrained" and cfg.model.pretrained == "models/shapes-sd3"
    assert (ROOT / cfg.model.pretrained / "model_index.json").is_file()
    assert not cfg.scaling.use_gpu
    assert cfg.scaling.ray_address is None and cfg.scaling.num_cpus == 8
    assert cfg.sampling.resolution == 64 and cfg.sampling.max_sequence_length == 20
    assert [r.name for r in cfg.rewards] == [
        "ocr",
        "prompt_alignment",
        "colorfulness",
        "jpeg_compressibility",
    ]
    assert cfg.rewards[0].params == {"engine": "onnx", "num_threads": 1}
    assert cfg.rewards[-1].params == {"scale_kb": 1.0}  # raw kB: the widest spread on purpose
    assert cfg.balancer.name == "apex"


def test_random_weight_config_is_tiny_cpu_and_small():
    cfg = load_config(LOCAL)
    assert cfg.model.kind == "tiny" and not cfg.scaling.use_gpu
    assert cfg.scaling.ray_address is None and cfg.scaling.num_cpus == 8
    assert cfg.sampling.resolution <= 64 and cfg.sampling.num_steps <= 4
    assert cfg.training.groups_per_epoch * cfg.training.images_per_prompt <= 32
    assert [r.name for r in cfg.rewards] == ["pickscore", "deqa", "aesthetic", "ocr"]
    assert cfg.rewards[-1].params == {"engine": "onnx"}
    assert cfg.balancer.name == "apex" and cfg.balancer.options.warmup_steps == 2


def test_paper_config_matches_method_defaults():
    cfg = load_config(PAPER)
    s, t, lo = cfg.sampling, cfg.training, cfg.lora
    assert cfg.model.pretrained == "stabilityai/stable-diffusion-3.5-medium"
    assert cfg.model.dtype == "bfloat16"
    assert (s.resolution, s.num_steps, s.eval_num_steps) == (512, 10, 40)
    assert (s.guidance_scale, s.noise_level, s.eval_noise_level) == (4.5, 0.7, 0.0)
    assert (t.groups_per_epoch, t.images_per_prompt, t.optimizer_steps_per_epoch) == (48, 24, 2)
    assert t.train_timesteps(s.num_steps) == 9
    assert (lo.rank, lo.alpha) == (32, 64)
    assert (t.lr, t.weight_decay, t.grad_clip, t.clip_range) == (3e-4, 1e-4, 1.0, 1e-4)
    assert (t.kl_beta, t.ema_decay, cfg.balancer.options.clip) == (0.04, 0.9, 5.0)
    assert cfg.scaling.num_workers == 8 and cfg.scaling.ray_address == "auto"
    assert cfg.rewards[0].params["model"] == "yuvalkirstain/PickScore_v1"
    # the paper YAML spells out the method defaults, so it equals the code defaults there
    defaults = TrainConfig()
    assert (cfg.sampling, cfg.training, cfg.lora) == (defaults.sampling, t, defaults.lora)
    assert cfg.balancer == defaults.balancer


def every_section(model: type[BaseModel], seen=None):
    seen = set() if seen is None else seen
    if model in seen:
        return seen
    seen.add(model)
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                every_section(tp, seen)
            stack.extend(typing.get_args(tp))
    return seen


def test_every_section_forbids_extra_keys_and_describes_its_fields():
    sections = every_section(TrainConfig)
    assert len(sections) >= 13
    for model in sections:
        assert model.model_config.get("extra") == "forbid", model.__name__
        if model.__module__ == "trainer.config":
            for name, field in model.model_fields.items():
                assert field.description, f"{model.__name__}.{name} has no description"


# --- overrides -------------------------------------------------------------------------


def test_overrides_apply_with_typed_values():
    cfg = load_config(
        LOCAL,
        [
            "training.lr=1e-4",
            "scaling.use_gpu=true",
            "rewards.0.weight=2",
            "rewards.3.params.engine=paddle",
            "model.tiny.transformer_layers=3",
            "balancer.options.warmup_steps=4",
            "logging.run_dir=/tmp/x",
            "scaling.num_cpus=null",
        ],
    )
    assert cfg.training.lr == pytest.approx(1e-4) and isinstance(cfg.training.lr, float)
    assert cfg.scaling.use_gpu is True
    assert cfg.rewards[0].weight == 2.0
    assert cfg.rewards[3].params == {"engine": "paddle"}
    assert cfg.model.tiny.transformer_layers == 3
    assert cfg.balancer.options.warmup_steps == 4
    assert cfg.logging.run_dir == "/tmp/x" and cfg.scaling.num_cpus is None
    assert load_config(LOCAL).rewards[0].weight == 1.0  # the file itself is untouched


def test_override_replaces_a_whole_list():
    cfg = load_config(LOCAL, ["rewards=[{name: ocr, weight: 2}, {name: pickscore}]"])
    assert [(r.name, r.weight) for r in cfg.rewards] == [("ocr", 2.0), ("pickscore", 1.0)]


def test_overrides_without_a_file_index_the_default_list():
    cfg = load_config(None, ["rewards.1.weight=0", "training.epochs=3"])
    assert [r.weight for r in cfg.rewards] == [1.0, 0.0, 1.0, 1.0]
    assert cfg.training.epochs == 3 and cfg.sampling == TrainConfig().sampling


def test_later_override_wins():
    assert load_config(LOCAL, ["training.epochs=2", "training.epochs=5"]).training.epochs == 5


@pytest.mark.parametrize("bad", ["training.lr", "=3", "training..lr=1", "training.l r=1"])
def test_bad_override_syntax_says_the_expected_form(bad):
    msg = error_of(LOCAL, [bad])
    assert repr(bad) in msg and "key=value" in msg


def test_override_index_out_of_range_names_the_list_and_its_length():
    msg = error_of(LOCAL, ["rewards.7.weight=1"])
    assert "rewards has 4 entries" in msg and "0..3" in msg


def test_override_into_a_value_is_an_error():
    assert "training.lr is a value" in error_of(LOCAL, ["training.lr.x=1"])


# --- errors ----------------------------------------------------------------------------


def test_unknown_key_names_the_dotted_path_and_the_close_match():
    msg = error_of(LOCAL, ["training.lrr=1"])
    assert "unknown key 'training.lrr'" in msg and "did you mean 'training.lr'?" in msg
    assert "valid keys under 'training'" in msg and "optimizer_steps_per_epoch" in msg


def test_unknown_keys_in_a_file_inside_a_list_and_at_the_top(tmp_path):
    data = yaml.safe_load(LOCAL.read_text())
    data["rewards"][1]["wieght"] = 2
    data["balancer"]["options"]["warmup_stpes"] = 3
    data["trainig"] = {}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg and len(info.value.problems) == 3
    assert "unknown key 'rewards.1.wieght'; did you mean 'rewards.1.weight'?" in msg
    assert "did you mean 'balancer.options.warmup_steps'?" in msg
    assert "unknown key 'trainig'; did you mean 'training'?" in msg


@pytest.mark.parametrize(
    "override, expected",
    [
        ("training.lr=-1", "training.lr: must be > 0, got -1"),
        ("training.epochs=abc", "training.epochs: must be an integer, got 'abc'"),
        ("model.kind=big", "model.kind: must be one of 'tiny' or 'pretrained', got 'big'"),
        ("rewards.0.weight=-2", "rewards.0.weight: must be >= 0, got -2"),
        ("scaling.use_gpu=maybe", "scaling.use_gpu: must be true or false"),
        ("training.ema_decay=1", "training.ema_decay: must be < 1, got 1"),
        ("rewards=[]", "rewards: must not be empty, got []"),
        ("rewards.0.name=Pick Score", "rewards.0.name: must match the pattern"),
    ],
)
def test_bad_value_names_the_field(override, expected):
    msg = error_of(LOCAL, [override])
    assert expected in msg and f"set by override {override!r}" in msg


def test_reward_names_unique_and_weights_not_all_zero():
    assert "repeated: ocr" in error_of(LOCAL, ["rewards.0.name=ocr"])
    zeros = [f"rewards.{i}.weight=0" for i in range(4)]
    assert "at least one reward needs weight > 0" in error_of(LOCAL, zeros)


def test_scaling_num_cpus_needs_a_local_cluster():
    msg = error_of(LOCAL, ["scaling.ray_address=auto"])
    assert "scaling: num_cpus only sizes a local cluster" in msg
    assert "set by override 'scaling.ray_address=auto'" in msg


def test_resolution_must_fit_the_latent_grid():
    msg = error_of(LOCAL, ["sampling.resolution=72"])
    assert "sampling.resolution = 72 must be a multiple of 16" in msg and "64 or 80" in msg


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert str(missing) in error_of(missing)


def test_invalid_yaml_and_non_mapping_name_the_path(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("training: [1,\n")
    assert str(broken) in error_of(broken) and "not valid YAML" in error_of(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    assert "top level must be a mapping" in error_of(listed)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert load_config(empty) == TrainConfig()


def test_an_empty_section_means_its_defaults(tmp_path):
    path = tmp_path / "sections.yaml"
    path.write_text("evaluation:\nbalancer:\n  options:\ntraining:\n  epochs: 2\n")
    cfg = load_config(path, ["checkpoint.keep=2"])
    assert cfg.evaluation == TrainConfig().evaluation and cfg.balancer == TrainConfig().balancer
    assert (cfg.training.epochs, cfg.checkpoint.keep) == (2, 2)
    assert "rewards: must not be empty" in error_of(path, ["rewards=[]"])


# --- batch shape -----------------------------------------------------------------------


def suggestions(msg: str, field: str) -> list[int]:
    match = re.search(rf"{re.escape(field)} to one of ([\d, ]+?)(?:;|$)", msg)
    assert match, f"no suggestion for {field} in: {msg}"
    return [int(v) for v in match.group(1).split(",")]


def test_workers_must_divide_the_epoch_and_suggestions_are_valid():
    msg = error_of(PAPER, ["scaling.num_workers=5"])
    assert "48 x 24 = 1152" in msg and "scaling.num_workers = 5" in msg
    for w in suggestions(msg, "scaling.num_workers"):
        load_config(PAPER, [f"scaling.num_workers={w}"])
    for g in suggestions(msg, "training.groups_per_epoch"):
        load_config(PAPER, ["scaling.num_workers=5", f"training.groups_per_epoch={g}"])


def test_per_worker_images_must_divide_by_optimizer_steps():
    msg = error_of(PAPER, ["training.optimizer_steps_per_epoch=5"])
    assert "144 images per worker" in msg and "training.optimizer_steps_per_epoch = 5" in msg
    for s in suggestions(msg, "training.optimizer_steps_per_epoch"):
        load_config(PAPER, [f"training.optimizer_steps_per_epoch={s}"])


def test_per_worker_images_must_divide_by_the_sampling_micro_batch():
    msg = error_of(LOCAL, ["sampling.micro_batch_size=3"])
    assert "16 images per worker" in msg and "sampling.micro_batch_size = 3" in msg
    for m in suggestions(msg, "sampling.micro_batch_size"):
        load_config(LOCAL, [f"sampling.micro_batch_size={m}"])


def test_per_step_images_must_divide_by_the_training_micro_batch():
    # 16 per worker, 2 steps: 8 per step; a sampler micro-batch of 16 fits, 8 per step does not
    msg = error_of(LOCAL, ["sampling.micro_batch_size=16"])
    assert "8 images per worker per optimizer step" in msg and "null" in msg
    load_config(LOCAL, ["sampling.micro_batch_size=16", "training.micro_batch_size=8"])


@pytest.mark.slow
def test_batch_shape_problem_accepts_exactly_the_valid_shapes():
    rng = np.random.default_rng(0)
    for _ in range(300):
        g, n, w, s, m = (int(x) for x in rng.integers(1, 9, size=5))
        t = None if rng.random() < 0.5 else int(rng.integers(1, 9))
        per = g * n / w
        valid = per.is_integer() and per % s == 0 and per % m == 0 and (per / s) % (t or m) == 0
        assert (batch_shape_problem(g, n, w, s, m, t) is None) == valid


# --- balancer --------------------------------------------------------------------------


@pytest.mark.parametrize("name", BALANCER_NAMES)
def test_balancer_kwargs_build_every_balancer(name):
    cfg = load_config(LOCAL, [f"balancer.name={name}", "rewards.0.weight=3", "rewards.1.weight=0"])
    k = len(cfg.rewards)
    balancer = make_balancer(cfg.balancer.name, k, **balancer_kwargs(cfg))
    np.testing.assert_allclose(balancer.base_weights, [0.6, 0.0, 0.2, 0.2])
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(4), 4)
    adv, weights, _ = balancer.step(rng.normal(size=(k, groups.size)), groups)
    assert adv.shape == (groups.size,) and weights.shape == (k,) and np.all(np.isfinite(adv))


def test_balancer_weights_agree_with_rewards_or_fail():
    ok = load_config(LOCAL, ["balancer.options.weights=[2, 2, 2, 2]"])
    assert balancer_kwargs(ok)["weights"] == [1.0, 1.0, 1.0, 1.0]
    msg = error_of(LOCAL, ["balancer.options.weights=[1, 2, 1, 1]"])
    assert "balancer.options.weights = [1.0, 2.0, 1.0, 1.0] disagrees" in msg
    assert "rewards[*].weight" in msg
    assert "one target per reward" in error_of(LOCAL, ["balancer.options.targets=[0.9]"])
    assert "floor <= 0.25" in error_of(LOCAL, ["balancer.options.floor=0.3"])
    assert "balancer.name: must be one of" in error_of(LOCAL, ["balancer.name=apexx"])


# --- dump and CLI ----------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_dump_load_round_trip(path, tmp_path):
    cfg = load_config(path, ["training.lr=1e-5", "rewards.2.params.extra=[1, 2]"])
    out = tmp_path / "resolved.yaml"
    out.write_text(dump_config(cfg))
    assert load_config(out) == cfg
    assert list(yaml.safe_load(out.read_text())) == list(TrainConfig.model_fields)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer.config", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_cli_prints_the_resolved_config():
    out = run_cli("deploy/configs/local.yaml", "training.epochs=2")
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["training"]["epochs"] == 2


@pytest.mark.slow
def test_cli_exits_2_with_the_message_on_stderr():
    out = run_cli("deploy/configs/local.yaml", "training.lrr=1")
    assert out.returncode == 2 and out.stdout == ""
    assert "unknown key 'training.lrr'; did you mean 'training.lr'?" in out.stderr
    assert run_cli("deploy/configs/missing.yaml").returncode == 2
