"""The reward half of the GPU check: each reward model in-process and through Ray Serve.

The registered reward classes are measured as the trainer uses them. Full-size weights cannot
be downloaded, so:

- **PickScore** (CLIP ViT-H/14) and **aesthetic** (CLIP ViT-L/14 + the 768-1024-128-64-16-1
  MLP) are built from ``bench/architectures`` with random weights and written to a temporary
  directory as a Hugging Face checkpoint (weights, an offline tokenizer, a
  ``preprocessor_config.json``); the rewards then load it with ``variant: pretrained``,
  i.e. the real loading and scoring code, in this process and in the Serve replicas alike.
- **DeQA** needs mPLUG-Owl2's remote code, so its ``tiny`` variant is sized like the real
  backbone instead: the vision tower of ``deqa_vision.json`` at 448 px and a LLaMA of
  ``deqa_backbone.json``'s width, depth and heads, with the prompt padded by 63 words so that
  the LM sees about as many positions as with mPLUG-Owl2's 64 visual tokens. Its MLPs are 2x
  wide (the tiny spec has no MLP width) instead of 4x (vision) and 2.7x (LLaMA), so it does
  ``flop_ratio`` (~0.77) of the real linear-layer FLOPs per image; the record says so.

Serve: one application named ``gpu-check`` (route ``/gpu-check``), one deployment per reward
with a fraction of the GPU (``num_gpus``), called through ``RewardClient.in_cluster``. An
already-initialized Ray (the integration tests' cluster) is reused and only this application
is deleted at the end; otherwise a local Ray is started and shut down.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import architectures as arch
from bench.common import free_port, make_images
from bench.gpucheck.settings import PROMPT, Settings

logger = logging.getLogger(__name__)

REWARDS = ("pickscore", "aesthetic", "deqa")
APP_NAME = "gpu-check"
ROUTE_PREFIX = "/gpu-check"
# replicas: no download attempts (the checkpoints are local), no progress bars or load reports
REPLICA_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}
VISUAL_TOKENS = 64  # mPLUG-Owl2's visual abstractor output length


# ---------------------------------------------------------------------------- reward params


def _write_clip(directory: Path, model: torch.nn.Module, tokenizer, image_size: int) -> None:
    """A local checkpoint that ``load_pretrained_clip`` reads like a Hub snapshot."""
    from services.rewards._torch.preprocess import CLIP_MEAN, CLIP_STD

    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    processor = {
        "do_resize": True,
        "size": {"shortest_edge": image_size},
        "do_center_crop": True,
        "crop_size": {"height": image_size, "width": image_size},
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
        "resample": 3,  # bicubic, as CLIP's
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(processor, indent=1))


def _clip_model(settings: Settings, name: str, tokenizer, seed: int):
    """A random-weight CLIPModel: tiny (``TinyClipSpec`` defaults) or the committed size."""
    from services.rewards._torch.clip import TinyClipSpec, build_tiny_clip

    if settings.tiny:
        parts = build_tiny_clip(TinyClipSpec(), seed)
        return parts.model, TinyClipSpec().image_size
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    over: dict[str, Any] = {"text_config": dict(ids)}
    if settings.max_layers:
        over["text_config"]["num_hidden_layers"] = settings.max_layers
        over["vision_config"] = {"num_hidden_layers": settings.max_layers}
    torch.manual_seed(seed)
    spec = arch.load(name)
    model = spec.build(device=settings.device, dtype=_dtype(settings), overrides=over)
    return model, spec.config["vision_config"]["image_size"]


def _dtype(settings: Settings) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[settings.dtype]


def deqa_standin(settings: Settings) -> tuple[dict[str, Any], str, float]:
    """``(tiny spec, prompt, flop_ratio)`` of the DeQA variant measured (see module doc)."""
    from services.rewards.deqa import DEFAULT_PROMPT, IMAGE_MARKER

    if settings.tiny:
        return {}, DEFAULT_PROMPT, float("nan")
    v, lm = arch.load("deqa_vision").config, arch.load("deqa_backbone").config
    cap = settings.max_layers or 10**9
    spec = {
        "vision": {
            "image_size": v["image_size"],
            "patch_size": v["patch_size"],
            "hidden": v["hidden_size"],
            "layers": min(cap, v["num_hidden_layers"]),
            "heads": v["num_attention_heads"],
        },
        "lm_hidden": lm["hidden_size"],
        "lm_layers": min(cap, lm["num_hidden_layers"]),
        "lm_heads": lm["num_attention_heads"],
    }
    filler = " v" * (VISUAL_TOKENS - 1)  # the image slot itself is the 64th position
    prompt = DEFAULT_PROMPT.replace(IMAGE_MARKER, IMAGE_MARKER + filler)
    d, h = v["hidden_size"], lm["hidden_size"]
    vision_tokens = (v["image_size"] // v["patch_size"]) ** 2 + 1
    lm_tokens = len(prompt.split()) + 1  # whitespace words ~ word-level tokens (+ BOS)
    layers_v, layers_l = v["num_hidden_layers"], lm["num_hidden_layers"]
    real = layers_v * vision_tokens * (4 * d * d + 2 * d * v["intermediate_size"])
    real += layers_l * lm_tokens * (4 * h * h + 3 * h * lm["intermediate_size"])
    standin = layers_v * vision_tokens * 8 * d * d + layers_l * lm_tokens * 10 * h * h
    return spec, prompt, standin / real


def reward_params(settings: Settings, workdir: Path) -> dict[str, dict[str, Any]]:
    """Each reward's params (its pydantic ``Config``), writing the CLIP checkpoints first."""
    from safetensors.torch import save_file

    from common.tokenizers import clip_tokenizer
    from services.rewards.aesthetic import AestheticMLP

    common = {
        "device": settings.device,
        "dtype": settings.dtype,
        "batch_size": max(settings.reward_batches),
    }
    out: dict[str, dict[str, Any]] = {}
    tokenizer = clip_tokenizer(77)
    pick_dir, aes_dir = workdir / "pickscore", workdir / "aesthetic"
    model, size = _clip_model(settings, "clip_vit_h14", tokenizer, settings.seed)
    _write_clip(pick_dir, model, tokenizer, size)
    del model
    out["pickscore"] = {
        "variant": "pretrained",
        "model": str(pick_dir),
        "processor": str(pick_dir),
        **common,
    }
    model, size = _clip_model(settings, "clip_vit_l14", tokenizer, settings.seed + 1)
    _write_clip(aes_dir, model, None, size)
    torch.manual_seed(settings.seed + 2)
    mlp = AestheticMLP(model.config.projection_dim)
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, aes_dir / "mlp.safetensors")
    del model
    out["aesthetic"] = {
        "variant": "pretrained",
        "model": str(aes_dir),
        "mlp_weights": str(aes_dir / "mlp.safetensors"),
        **common,
    }
    spec, prompt, _ = deqa_standin(settings)
    out["deqa"] = {
        "variant": "tiny",
        "tiny": spec,
        "prompt": prompt,
        "seed": settings.seed,
        **common,
    }
    _free(settings.device)
    return out


# ---------------------------------------------------------------------------- measuring


def _free(device: str) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def score_rates(
    score: Callable[[list, list], Sequence[float | None]],
    images: list[np.ndarray],
    batches: Sequence[int],
    deadline: float,
    reps: int = 3,
) -> dict[str, Any]:
    """Images/s of ``score`` per batch size: the fastest of up to ``reps`` calls after a warm-up.

    The fastest call is reported (timeit's convention: on a shared machine other processes
    only add time); the median is kept too.
    """
    prompts = [PROMPT] * len(images)
    score(images[: batches[0]], prompts[: batches[0]])  # warm-up: kernels, allocator
    out: dict[str, Any] = {}
    for b in batches:
        times, unscored = [], 0
        while len(times) < reps and (not times or time.perf_counter() + times[-1] < deadline):
            start = time.perf_counter()
            values = score(images[:b], prompts[:b])
            times.append(time.perf_counter() - start)
            unscored = sum(v is None or not np.isfinite(v) for v in values)
        out[str(b)] = {
            "images_per_s": b / min(times),
            "best_s": min(times),
            "median_s": statistics.median(times),
            "calls": len(times),
            "unscored": unscored,
        }
    return out


def measure_in_process(name: str, params: dict, settings: Settings, images, deadline) -> dict:
    """Load the reward in this process (as a replica would) and measure ``score``."""
    from services.rewards.base import build_reward

    start = time.perf_counter()
    model = build_reward(name, params)
    # the tiny variant builds on the default device: build it on the GPU, not in host memory
    with torch.device(settings.device if params["variant"] == "tiny" else "cpu"):
        model.load()
    load_s = time.perf_counter() - start
    holder = getattr(model, "clip", None)
    net = holder.model if holder is not None else model.backbone
    record = {
        "load_s": load_s,
        "parameters": sum(p.numel() for p in net.parameters()),
        "batches": score_rates(model.score, images, settings.reward_batches, deadline),
    }
    del model, net, holder
    _free(settings.device)
    return record


def services_config(settings: Settings, params: dict[str, dict]):
    """The ``gpu-check`` Serve application: one deployment per reward, a GPU fraction each."""
    from services.config import load_services_config

    threads = 1 if settings.tiny else max(1, (os.cpu_count() or 2) // 2)
    # a replica sees only the GPU Ray gave it, as cuda:0, whatever the driver's index
    replica_device = "cuda" if settings.device.startswith("cuda") else settings.device
    deployments = [
        {
            "reward": name,
            "params": {**p, "device": replica_device},
            "num_cpus": settings.serve_num_cpus,
            "num_gpus": settings.serve_num_gpus,
            "max_batch_size": max(settings.reward_batches),
            "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(threads), **REPLICA_ENV}},
            "health_check_period_s": 30.0,
            "health_check_timeout_s": 120.0,
        }
        for name, p in params.items()
    ]
    return load_services_config(
        {
            "app_name": APP_NAME,
            "log_level": "WARNING",
            "deployments": deployments,
            "ingress": {
                "http_port": free_port(),
                "grpc_port": 0,
                "route_prefix": ROUTE_PREFIX,
                "num_cpus": 0.1,
            },
            "limits": {"max_images": max(256, *settings.reward_batches)},
        }
    )


def _ensure_ray(settings: Settings) -> bool:
    """Start a local Ray unless one is initialized already; True when this call started it."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60 enables token auth
    import ray

    if ray.is_initialized():
        return False
    on_gpu = torch.device(settings.device).type == "cuda"
    # workers import the services package from this checkout, whatever the working directory
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    ray.init(
        address="local",
        num_cpus=max(4, os.cpu_count() or 1),
        num_gpus=torch.cuda.device_count() if on_gpu else 0,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=tempfile.mkdtemp(prefix="gc", dir="/tmp"),  # short: socket path limit
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    return True


def _deploy(config, deadline: float) -> float:
    """Deploy and wait until every replica is up; a TimeoutError past ``deadline``."""
    from services.serving.app import deploy

    box: dict[str, BaseException] = {}

    def target() -> None:
        try:
            deploy(config)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    start = time.perf_counter()
    thread = threading.Thread(target=target, name="gpu-check-deploy", daemon=True)
    thread.start()
    thread.join(timeout=max(1.0, deadline - start))
    if thread.is_alive():
        raise TimeoutError(f"the {APP_NAME} app was not up after {deadline - start:.0f} s")
    if "error" in box:
        raise box["error"]
    return time.perf_counter() - start


def measure_served(params: dict[str, dict], settings: Settings, images, deadline: float) -> dict:
    """Deploy the app, measure each reward through ``RewardClient.in_cluster``, clean up.

    The deployment may take three quarters of the time left; the calls get the rest.
    """
    from ray import serve

    from services.client import RewardClient

    started_ray = _ensure_ray(settings)
    out: dict[str, Any] = {}
    try:
        now = time.perf_counter()
        out["deploy_s"] = _deploy(services_config(settings, params), now + 0.75 * (deadline - now))
        with RewardClient.in_cluster(APP_NAME, timeout_s=300.0) as client:
            for name in params:

                def score(ims, prompts, name=name):
                    matrix = client.score(ims, prompts, [name])
                    if matrix.failures:
                        raise RuntimeError(f"{name} failed through Serve: {matrix.failures}")
                    return [None if np.isnan(v) else float(v) for v in matrix.scores[0]]

                out[name] = {
                    "batches": score_rates(score, images, settings.reward_batches, deadline)
                }
    finally:
        try:
            serve.delete(APP_NAME)
        except Exception:  # cleanup must not hide the real error
            logger.exception("could not delete the %s app", APP_NAME)
        if started_ray:
            import ray

            serve.shutdown()
            ray.shutdown()
    return out


def measure_rewards(settings: Settings, deadline: float) -> dict[str, Any]:
    """In-process, then through Serve, for every reward; per-reward errors are recorded."""
    images = make_images(max(settings.reward_batches), settings.reward_image_size, settings.seed)
    record: dict[str, Any] = {
        "image_size": settings.reward_image_size,
        "batches": list(settings.reward_batches),
        "serve": {
            "app": APP_NAME,
            "num_gpus": settings.serve_num_gpus,
            "num_cpus": settings.serve_num_cpus,
        },
    }
    _, _, ratio = deqa_standin(settings)
    if not settings.tiny:
        record["deqa_standin_flop_ratio"] = ratio
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        start = time.perf_counter()
        params = reward_params(settings, Path(tmp))
        record["checkpoint_write_s"] = time.perf_counter() - start
        in_process_end = start + 0.4 * (deadline - start)
        per_reward: dict[str, Any] = {}
        for name, p in params.items():
            try:
                per_reward[name] = {
                    "in_process": measure_in_process(name, p, settings, images, in_process_end)
                }
            except Exception as exc:
                logger.exception("reward %s in-process", name)
                per_reward[name] = {"in_process": _error(exc)}
                _free(settings.device)
        try:
            served = measure_served(params, settings, images, deadline)
            record["serve"]["deploy_s"] = served.pop("deploy_s")
            for name in params:
                per_reward[name]["serve"] = served.get(name) or _skipped("no Serve figure")
        except Exception as exc:
            logger.exception("rewards through Serve")
            for name in params:
                per_reward[name].setdefault("serve", _error(exc))
    record["rewards"] = per_reward
    return record


def _error(exc: BaseException) -> dict[str, str]:
    return {"status": "error", "reason": f"{type(exc).__name__}: {exc}"[:500]}


def _skipped(reason: str) -> dict[str, str]:
    return {"status": "skipped", "reason": reason}
