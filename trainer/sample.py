"""Sample from a finished run with diffusers' own pipeline: base model and tuned, side by side.

    python -m trainer.sample RUN_DIR [--prompts FILE] [--num N] [--out DIR]
    make sample RUN=runs/local/<timestamp> [PROMPTS=file]

A run writes its adapter at the end as ``RUN_DIR/lora/pytorch_lora_weights.safetensors``
(diffusers' format). This command loads the run's base model exactly as the trainer did
(``RUN_DIR/config.yaml``), samples each prompt with ``StableDiffusion3Pipeline.__call__``, then
loads the adapter with ``pipe.load_lora_weights`` and samples again from the same seeds. It
writes ``base/NNN.png``, ``tuned/NNN.png`` and ``side_by_side.png`` (base | tuned per prompt)
under ``--out`` (default ``RUN_DIR/samples``). Steps, guidance and resolution default to the
run's evaluation settings. Exits 2 with a message naming the path when something is missing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trainer.config import TrainConfig, load_config
from trainer.loop.data import load_prompts
from trainer.model.pipeline import LORA_WEIGHT_NAME, load_pipeline
from trainer.outputs.images import save_image_grid, side_by_side
from trainer.outputs.run_folder import LORA_DIR


class SampleError(RuntimeError):
    """A run folder or prompt file that cannot be sampled from (the message names the path)."""


def run_paths(run_dir: str | Path) -> tuple[Path, Path]:
    """``(config.yaml, lora dir)`` of a run folder; :class:`SampleError` names what is missing."""
    run = Path(run_dir)
    config, lora = run / "config.yaml", run / LORA_DIR
    if not config.is_file():
        raise SampleError(f"{config} not found: RUN must be a run folder written by make train")
    if not (lora / LORA_WEIGHT_NAME).is_file():
        raise SampleError(
            f"{lora / LORA_WEIGHT_NAME} not found: the run has not finished (a run writes its "
            "adapter at the end)"
        )
    return config, lora


def diffusers_images(
    pipe, prompts: Sequence[str], cfg: TrainConfig, *, steps: int, guidance: float, seed: int
) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` from ``pipe(...)``, prompt ``i`` drawn from seed ``seed + i``."""
    res = cfg.sampling.resolution
    out = []
    for i, prompt in enumerate(prompts):
        image = pipe(
            prompt=prompt,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=res,
            width=res,
            max_sequence_length=cfg.sampling.max_sequence_length,
            generator=torch.Generator().manual_seed(seed + i),
            output_type="np",
        ).images[0]
        out.append(np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8))
    return np.stack(out)


def sample_run(
    run_dir: str | Path,
    prompts_file: str | Path | None = None,
    *,
    num: int = 8,
    out: str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Path]:
    """Base and tuned images of ``num`` prompts (default: the run's eval prompts); returns paths."""
    config, lora = run_paths(run_dir)
    cfg = load_config(config)
    source = [prompts_file] if prompts_file is not None else cfg.data.eval_prompts
    prompts = load_prompts(source)[:num]
    if not prompts:
        raise SampleError(f"no prompts in {source}")
    steps, guidance = cfg.sampling.eval_num_steps, cfg.sampling.eval_guidance_scale
    pipe = load_pipeline(cfg.model, device)
    base = diffusers_images(pipe, prompts, cfg, steps=steps, guidance=guidance, seed=seed)
    pipe.load_lora_weights(lora)
    tuned = diffusers_images(pipe, prompts, cfg, steps=steps, guidance=guidance, seed=seed)
    out_dir = Path(out) if out is not None else Path(run_dir) / "samples"
    for name, images in (("base", base), ("tuned", tuned)):
        (out_dir / name).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(out_dir / name / f"{i:03d}.png")
    grid = save_image_grid(side_by_side(base, tuned), prompts, out_dir / "side_by_side.png")
    return {"base": out_dir / "base", "tuned": out_dir / "tuned", "side_by_side": grid}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit 2 on a missing run, adapter or prompt file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run folder written by make train")
    parser.add_argument("--prompts", default=None, help="prompt file (default: the eval prompts)")
    parser.add_argument("--num", type=int, default=8, help="how many prompts (default 8)")
    parser.add_argument("--out", default=None, help="output folder (default RUN_DIR/samples)")
    parser.add_argument("--seed", type=int, default=0, help="prompt i uses seed + i")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    args = parser.parse_args(argv)
    try:
        paths = sample_run(
            args.run_dir, args.prompts, num=args.num, out=args.out, seed=args.seed,
            device=args.device,
        )  # fmt: skip
    except (SampleError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"base and tuned side by side: {paths['side_by_side']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
