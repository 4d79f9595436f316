"""The full-size architectures of every model the project runs, as small JSON configs.

Model weights cannot be downloaded in CI (and SD3.5 is gated), but the *configs* are small and
public, so they are committed here: one JSON per model, holding the library, the class, the
Hugging Face ``config.json`` content and its source. From them this module builds the real
classes with the real sizes, either on the ``meta`` device (no memory: parameter counts, shapes,
FLOP formulas; ``tests/unit/test_architectures.py``) or with random weights on a device
(``bench/gpu_check.py`` on a GPU).

A parameter count here is what a checkpoint stores: every parameter and persistent buffer,
tied tensors once. It differs from the trainable count only for SD3's transformer, whose
positional-embedding table (384^2 x 1536 = 226M values) is a stored buffer.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "EXPECTED_PARAMS",
    "NAMES",
    "Architecture",
    "build",
    "build_meta",
    "check_count",
    "load",
    "param_count",
]

HERE = Path(__file__).resolve().parent
NAMES = tuple(sorted(p.stem for p in HERE.glob("*.json")))

# The documented sizes, in stored values (see the module docstring). Each comes from the
# model's own documentation or its released checkpoint (bytes / 2 for a fp16 file).
EXPECTED_PARAMS: dict[str, float] = {
    # SD3.5 Medium model card: "2.5 billion parameters" (MMDiT-X); the fp16 transformer
    # checkpoint is ~4.94 GB = 2.47B values: 2.243B weights + the 226M positional table.
    "sd35_medium_transformer": 2.5e9,
    # SD3's VAE (16 latent channels): vae/diffusion_pytorch_model.safetensors ~168 MB in fp16.
    "sd35_vae": 84e6,
    # OpenAI CLIP ViT-L/14 text tower, 123M, + the 768x768 text projection (SD3 text_encoder,
    # model.safetensors ~247 MB in fp16).
    "clip_l_text": 123.7e6,
    # OpenCLIP ViT-bigG/14 text tower + projection (SD3 text_encoder_2, ~1.39 GB in fp16).
    "clip_g_text": 694.7e6,
    # T5 v1.1 XXL encoder, 4.76B (SD3 text_encoder_3, two shards, ~9.52 GB in fp16).
    "t5_xxl_encoder": 4.762e9,
    # open_clip's model table: ViT-H-14 986.11M parameters (PickScore_v1 is this model).
    "clip_vit_h14": 986.1e6,
    # openai/clip-vit-large-patch14: 427.6M parameters (pytorch_model.bin 1.71 GB in fp32).
    "clip_vit_l14": 427.6e6,
    # LLaMA-2-7B (Touvron et al. 2023): 6,738,415,616 parameters; mPLUG-Owl2's LLM.
    "deqa_backbone": 6.738e9,
    # mPLUG-Owl2 paper: vision encoder ViT-L/14, 0.3B (304M with the 448 px position table).
    "deqa_vision": 304e6,
}


@dataclass(frozen=True)
class Architecture:
    """One committed architecture: which class to build and its Hugging Face config."""

    name: str
    library: str  # "diffusers" or "transformers"
    cls: str
    config: dict[str, Any]
    source: str
    notes: str

    def model_class(self) -> type[torch.nn.Module]:
        """The diffusers / transformers model class named by the JSON."""
        import diffusers
        import transformers

        lib = {"diffusers": diffusers, "transformers": transformers}[self.library]
        return getattr(lib, self.cls)

    def merged(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The config with ``overrides`` merged in (nested dicts merge key by key)."""
        return _merge(copy.deepcopy(self.config), overrides or {})

    def build(
        self,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> torch.nn.Module:
        """The model with random (default-initialized) weights, built on ``device``.

        Building on the target device (``meta`` included) avoids materializing the weights
        on the CPU first; ``dtype`` casts after the build. The module is in eval mode.
        """
        cls, config = self.model_class(), self.merged(overrides)
        with torch.device(device or "cpu"):
            if self.library == "diffusers":
                model = cls.from_config(config)
            else:
                model = cls(cls.config_class(**config))
        if dtype is not None:
            # diffusers' .to(dtype) warns unless some modules are kept in float32
            if getattr(model, "_keep_in_fp32_modules", None):
                model.to(dtype)
            else:
                torch.nn.Module.to(model, dtype)
        return model.eval()


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def load(name: str) -> Architecture:
    """The architecture ``name`` (a JSON file stem, see :data:`NAMES`)."""
    path = HERE / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(NAMES)}")
    spec = json.loads(path.read_text())
    return Architecture(
        name=name,
        library=spec["library"],
        cls=spec["class"],
        config=spec["config"],
        source=spec["source"],
        notes=spec.get("notes", ""),
    )


def build(name: str, **kwargs: Any) -> torch.nn.Module:
    """Shortcut for ``load(name).build(**kwargs)``."""
    return load(name).build(**kwargs)


def build_meta(name: str, overrides: dict[str, Any] | None = None) -> torch.nn.Module:
    """The full-size model on the ``meta`` device: shapes and counts, no memory."""
    return load(name).build(device="meta", overrides=overrides)


def stored_values(model: torch.nn.Module) -> int:
    """Parameters plus persistent buffers, tied tensors counted once (what a checkpoint holds)."""
    seen: set[int] = set()
    total = 0
    persistent = set(model.state_dict().keys())
    tensors = [p for _, p in model.named_parameters()]
    tensors += [b for n, b in model.named_buffers() if n in persistent]
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel()
    return total


def param_count(name: str) -> int:
    """Stored values of the full-size ``name`` (built on the meta device)."""
    return stored_values(build_meta(name))


def check_count(name: str, count: int, rel_tol: float = 0.02) -> None:
    """Raise ``ValueError`` unless ``count`` is within ``rel_tol`` of the documented size."""
    expected = EXPECTED_PARAMS[name]
    off = count / expected - 1.0
    if abs(off) > rel_tol:
        raise ValueError(
            f"{name}: {count:,} values, documented {expected:,.0f} ({off:+.1%}, "
            f"tolerance {rel_tol:.0%}); fix bench/architectures/{name}.json or its source"
        )
