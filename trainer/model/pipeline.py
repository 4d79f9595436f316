"""Load the SD3 pipeline to fine-tune, and the LoRA helpers around its transformer.

The policy is the SD3 transformer plus one LoRA adapter; everything else (VAE, the three text
encoders, the base transformer weights) is frozen. The KL reference of Flow-GRPO is the same
transformer with the adapter switched off (:func:`lora_disabled`), so no second copy of the
model is ever held.

Precision: the frozen weights take ``ModelConfig.dtype`` (bf16 for SD3.5 Medium), except the VAE,
which stays float32 (it runs once per rollout; SD3's VAE decode is where low precision shows
first). The trainable LoRA weights are always float32, even on a bf16 base: AdamW updates of
size ``lr x grad`` (3e-4 x ...) are far below bf16's resolution (8 mantissa bits) and would be
rounded away. PEFT casts the layer input to the LoRA dtype and the LoRA output back to the base
layer's dtype, so a float32 adapter on a bf16 base needs no autocast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import diffusers
import peft
import torch
import transformers
from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
from packaging.version import Version
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file

from trainer.config import LoraConfig, ModelConfig
from trainer.model.tiny import build_tiny_pipeline

__all__ = [
    "DTYPES",
    "LORA_WEIGHT_NAME",
    "ModelLoadError",
    "add_lora",
    "check_model_folder",
    "compute_dtype",
    "load_lora",
    "load_lora_state_dict",
    "load_pipeline",
    "looks_local",
    "lora_disabled",
    "lora_parameters",
    "lora_state_dict",
    "save_lora",
]

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ADAPTER = "default"  # the one adapter's name; it appears inside lora_state_dict keys
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' name: pipe.load_lora_weights


class ModelLoadError(RuntimeError):
    """The pretrained pipeline could not be loaded; the message says what to check."""


def load_pipeline(cfg: ModelConfig, device: torch.device | str = "cpu") -> StableDiffusion3Pipeline:
    """The frozen SD3 pipeline on ``device``: tiny (built in code) or pretrained (id or path).

    ``cfg.pretrained`` is a Hugging Face id (``stabilityai/stable-diffusion-3.5-medium``, gated:
    accept its licence on the Hub and export ``HF_TOKEN``, or run ``hf auth login``) or a
    local directory written by ``save_pretrained``. Every module is put in eval mode with
    ``requires_grad = False``; add the trainable adapter with :func:`add_lora`.
    """
    dtype = DTYPES[cfg.dtype]
    pipe = build_tiny_pipeline(cfg.tiny) if cfg.kind == "tiny" else _from_pretrained(cfg, dtype)
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            _cast(module, torch.float32 if name == "vae" else dtype)
            module.requires_grad_(False)
            module.eval()
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _cast(module: torch.nn.Module, dtype: torch.dtype) -> None:
    if compute_dtype(module) == dtype:
        return
    if getattr(module, "_keep_in_fp32_modules", None):
        module.to(dtype)  # diffusers' .to() keeps those submodules in float32
    else:
        # plain nn.Module.to: diffusers' override only adds a warning when nothing is kept
        torch.nn.Module.to(module, dtype)


def _dtype_kwargs(dtype: torch.dtype) -> dict:
    # diffusers renamed from_pretrained's torch_dtype to dtype (the old name warns from 0.42);
    # a per-component dict loads the VAE straight in float32 instead of upcasting bf16 weights
    if Version(diffusers.__version__) >= Version("0.42"):
        return {"dtype": {"default": dtype, "vae": torch.float32}}
    return {"torch_dtype": dtype}


def looks_local(name: str) -> bool:
    """Whether ``model.pretrained`` names a local folder rather than a Hugging Face id.

    An existing path is local; so is an absolute path, one starting with ``.`` or ``~``, or
    one whose first folder exists here (``models/shapes-sd3`` in a checkout), because
    ``org/name`` alone cannot tell a hub id from a relative path.
    """
    path = Path(name).expanduser()
    if path.exists() or path.is_absolute() or name.startswith((".", "~")):
        return True
    return len(path.parts) > 1 and Path(path.parts[0]).is_dir()


def check_model_folder(folder: Path) -> None:
    """Fail early, naming the path and the file, on a missing or damaged local SD3 folder.

    Checks that the folder and its ``model_index.json`` exist and parse, that every component
    the index names has its folder, and that every ``.safetensors`` file's header reads.
    """
    if not folder.is_dir():
        raise ModelLoadError(
            f"model folder {folder} does not exist (model.pretrained); run `make pretrain` to "
            "write the small model, or point model.pretrained at a save_pretrained folder"
        )
    index = folder / "model_index.json"
    try:
        components = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{index} is missing or unreadable ({exc}); a folder written by save_pretrained "
            "has a model_index.json next to one folder per component"
        ) from exc
    for name, spec in components.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        if not (folder / name).is_dir():
            raise ModelLoadError(f"{folder / name} is missing: model_index.json lists {name!r}")
        for weights in sorted((folder / name).glob("*.safetensors")):
            try:
                with safe_open(str(weights), framework="pt") as handle:
                    handle.keys()
            except Exception as exc:  # safetensors raises its own error types
                raise ModelLoadError(f"{weights} is damaged: {exc}") from exc


def _from_pretrained(cfg: ModelConfig, dtype: torch.dtype) -> StableDiffusion3Pipeline:
    local = looks_local(cfg.pretrained)
    where = Path(cfg.pretrained).expanduser()
    if local:
        check_model_folder(where)
    source = str(where) if local else cfg.pretrained
    # per-component loading bars would fill the training console; errors still raise
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    try:
        return StableDiffusion3Pipeline.from_pretrained(
            source, revision=cfg.revision, **_dtype_kwargs(dtype)
        )
    except (OSError, ValueError) as exc:
        hint = (
            f"the local directory {source} must hold a pipeline written by save_pretrained "
            "(model_index.json plus one folder per component)"
            if local
            else f"{cfg.pretrained!r} is not a local directory, so it was fetched from the "
            "Hugging Face Hub: check the id and revision, the network, and for gated models "
            "(SD3.5) that you accepted the licence and set HF_TOKEN; offline, point "
            "model.pretrained at a local copy"
        )
        raise ModelLoadError(
            f"cannot load model.pretrained={cfg.pretrained!r}: {hint} ({exc})"
        ) from exc


def compute_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype of the frozen base weights (LoRA weights, float32, are skipped)."""
    for name, param in module.named_parameters():
        if ".lora_" not in name and param.is_floating_point():
            return param.dtype
    raise ValueError("module has no floating-point base parameters")


def add_lora(
    transformer: SD3Transformer2DModel, cfg: LoraConfig, *, seed: int | None = None
) -> list[torch.nn.Parameter]:
    """Add the trainable adapter; returns its parameters (float32, ``requires_grad``).

    The base weights are frozen. PEFT initialises ``B = 0``, so the adapted model starts equal
    to the base model; ``seed`` makes the random ``A`` the same on every worker without
    touching the global RNG. ``cfg.init_from`` (a directory written by :func:`save_lora`)
    replaces the initial weights.
    """
    transformer.requires_grad_(False)
    peft_cfg = peft.LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        init_lora_weights="gaussian" if cfg.init == "gaussian" else True,
        target_modules=list(cfg.target_modules),
    )
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        transformer.add_adapter(peft_cfg, adapter_name=ADAPTER)
    params = lora_parameters(transformer)
    for p in params:
        p.data = p.data.to(torch.float32)
        p.requires_grad_(True)
    if cfg.init_from is not None:
        load_lora(transformer, cfg.init_from)
    logger.info(
        "LoRA r=%d alpha=%g on %d modules: %d trainable parameters",
        cfg.rank,
        cfg.alpha,
        sum(isinstance(m, BaseTunerLayer) for m in transformer.modules()),
        sum(p.numel() for p in params),
    )
    return params


def lora_parameters(transformer: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The adapter's parameters, in a fixed (module registration) order."""
    return [p for name, p in transformer.named_parameters() if ".lora_" in name]


def lora_state_dict(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the adapter weights only, keyed by full parameter name (exact dtype)."""
    state = {
        name: p.detach().to("cpu", copy=True)
        for name, p in transformer.named_parameters()
        if ".lora_" in name
    }
    if not state:
        raise ValueError("the transformer has no LoRA adapter; call add_lora first")
    return state


@torch.no_grad()
def load_lora_state_dict(transformer: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy adapter weights from :func:`lora_state_dict` in place (strict: same keys, shapes)."""
    params = dict((n, p) for n, p in transformer.named_parameters() if ".lora_" in n)
    missing, unexpected = sorted(params.keys() - state.keys()), sorted(state.keys() - params.keys())
    if missing or unexpected:
        raise KeyError(
            f"LoRA state does not match the adapter: {len(missing)} missing (e.g. "
            f"{missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}); check "
            "lora.rank and lora.target_modules against the saved adapter"
        )
    for name, p in params.items():
        if state[name].shape != p.shape:
            raise ValueError(f"{name}: saved shape {tuple(state[name].shape)} != {tuple(p.shape)}")
        p.copy_(state[name])


def save_lora(transformer: SD3Transformer2DModel, directory: str | Path) -> Path:
    """Write the adapter in diffusers' format: any user can ``pipe.load_lora_weights(directory)``.

    The file carries the PEFT config (rank, alpha, targets) as metadata, so diffusers restores
    the right LoRA scale. Returns the file's path.
    """
    directory = Path(directory)
    StableDiffusion3Pipeline.save_lora_weights(
        directory,
        transformer_lora_layers=get_peft_model_state_dict(transformer, adapter_name=ADAPTER),
        transformer_lora_adapter_metadata=transformer.peft_config[ADAPTER].to_dict(),
        weight_name=LORA_WEIGHT_NAME,
    )
    return directory / LORA_WEIGHT_NAME


def load_lora(transformer: SD3Transformer2DModel, directory: str | Path) -> None:
    """Load a :func:`save_lora` directory (or file) into the existing adapter, strictly."""
    path = Path(directory)
    path = path / LORA_WEIGHT_NAME if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no LoRA weights at {path} (written by trainer save_lora)")
    saved = load_file(str(path))
    # diffusers: "transformer.<module>.lora_A.weight"; ours: "<module>.lora_A.default.weight"
    state = {
        re.sub(r"\.(lora_[A-Za-z_]+)\.", rf".\1.{ADAPTER}.", key.removeprefix("transformer.")): v
        for key, v in saved.items()
    }
    load_lora_state_dict(transformer, state)


@contextlib.contextmanager
def lora_disabled(transformer: SD3Transformer2DModel) -> Iterator[SD3Transformer2DModel]:
    """Run the base model (the KL reference) inside the block; the adapter is restored after.

    If the adapter was already disabled on entry it stays disabled on exit.
    """
    layers = [m for m in transformer.modules() if isinstance(m, BaseTunerLayer)]
    if not layers:
        raise ValueError("the transformer has no LoRA adapter; call add_lora first")
    was_disabled = layers[0].disable_adapters
    transformer.disable_adapters()
    try:
        yield transformer
    finally:
        if not was_disabled:
            transformer.enable_adapters()
