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

PickScore is measured with its default ``preprocess: device`` (uint8 batches resized on the
GPU) and, at batch 64, with ``preprocess: pil`` (the host path) to compare.

Serve: :mod:`bench.gpucheck.serve`, for the rewards in ``settings.serve_rewards``.
"""

from __future__ import annotations

import gc
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench import architectures as arch
from bench.common import make_images
from bench.gpucheck.serve import APP_NAME, measure_served
from bench.gpucheck.settings import Settings
from bench.gpucheck.timing import score_rates

logger = logging.getLogger(__name__)

REWARDS = ("pickscore", "aesthetic", "deqa")
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


def measure_in_process(
    name: str, params: dict, settings: Settings, images, deadline, batches=None
) -> dict:
    """Load the reward in this process (as a replica would) and measure ``score``.

    ``batches``: the batch sizes (default: the settings' reward batches).
    """
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
        "batches": score_rates(model.score, images, batches or settings.reward_batches, deadline),
    }
    if "preprocess" in type(model).Config.model_fields:
        record["preprocess"] = model.config.preprocess
    del model, net, holder
    _free(settings.device)
    return record


def measure_rewards(settings: Settings, deadline: float) -> dict[str, Any]:
    """In-process, then through Serve, for every reward; per-reward errors are recorded."""
    most = max(*settings.reward_batches, *settings.pil_batches)  # a batch never reuses images
    images = make_images(most, settings.reward_image_size, settings.seed)
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
            per_reward[name] = {
                "in_process": _guarded(
                    f"{name} in-process",
                    settings,
                    lambda name=name, p=p: measure_in_process(
                        name, p, settings, images, in_process_end
                    ),
                )
            }
            if name == "pickscore" and settings.pil_batches:  # the host path, to compare
                per_reward[name]["in_process_pil"] = _guarded(
                    "pickscore pil",
                    settings,
                    lambda p=p: measure_in_process(
                        "pickscore",
                        {**p, "preprocess": "pil"},
                        settings,
                        images,
                        in_process_end,
                        settings.pil_batches,
                    ),
                )
        served_params = {n: p for n, p in params.items() if n in settings.serve_rewards}
        for name in set(params) - set(served_params):
            per_reward[name]["serve"] = _skipped(
                "not served in this mode (time budget): the estimate uses the in-process rate"
            )
        try:
            served = measure_served(served_params, settings, images, deadline)
            record["serve"]["deploy_s"] = served.pop("deploy_s")
            for name in served_params:
                per_reward[name]["serve"] = served.get(name) or _skipped("no Serve figure")
        except Exception as exc:
            logger.exception("rewards through Serve")
            for name in served_params:
                per_reward[name].setdefault("serve", _error(exc))
    record["rewards"] = per_reward
    return record


def _guarded(what: str, settings: Settings, fn: Callable[[], dict]) -> dict:
    """``fn()``, or its error recorded (the other rewards are still measured)."""
    try:
        return fn()
    except Exception as exc:
        logger.exception("reward %s", what)
        _free(settings.device)
        return _error(exc)


def _error(exc: BaseException) -> dict[str, str]:
    return {"status": "error", "reason": f"{type(exc).__name__}: {exc}"[:500]}


def _skipped(reason: str) -> dict[str, str]:
    return {"status": "skipped", "reason": reason}
