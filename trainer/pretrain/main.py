"""``make pretrain``: fit the small SD3 model on generated scenes; save it for ``from_pretrained``.

Two phases (autoencoder, then flow matching), a progress bar over both, and a folder that
loads like any SD3 checkpoint on disk (``model.kind: pretrained``, ``model.pretrained: DIR``):

    DIR/model_index.json, transformer/, vae/, text_encoder*/, tokenizer*/, scheduler/
    DIR/pretrain_config.yaml   the resolved config (rerun it to reproduce the weights)
    DIR/losses.json            the loss of every logged step of both phases
    DIR/loss_curve.png         both loss curves
    DIR/samples.png            ODE samples of held-out captions from the saved weights

Weights are stored in float16 (the trainer loads them in its own ``model.dtype``). The folder
is written next to its destination and renamed into place, so an interrupted run never leaves
a half-written model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.config_loader import ConfigError
from trainer.pretrain.build import build_untrained_pipeline
from trainer.pretrain.config import (
    PretrainConfig,
    dump_pretrain_config,
    load_pretrain_config,
    variation_of,
)
from trainer.pretrain.fit_flow import fit_flow
from trainer.pretrain.fit_vae import encode_dataset, fit_vae
from trainer.pretrain.report import plot_losses, sample_grid
from trainer.pretrain.scenes import scene_batch

__all__ = ["main", "pretrain"]


def pretrain(cfg: PretrainConfig, *, progress: bool = True) -> Path:
    """Run both phases and write ``cfg.output_dir``; returns its path."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    started = time.monotonic()
    pipe = build_untrained_pipeline(cfg)
    losses: dict[str, list[list[float]]] = {"vae": [], "flow": []}
    bar = tqdm(
        total=cfg.vae.steps + cfg.flow.steps, desc="pretrain", disable=not progress, unit="step"
    )

    def recorder(phase: str):
        def on_step(step: int, loss: float) -> None:
            bar.update(1)
            if step % cfg.log_every == 0:
                losses[phase].append([step, loss])
                bar.set_postfix(phase=phase, loss=f"{loss:.4f}")

        return on_step

    fit_vae(pipe.vae, cfg, recorder("vae"))
    images, captions, _ = scene_batch(
        cfg.seed, cfg.flow.dataset_size, cfg.resolution, cfg.word_share, variation_of(cfg)
    )
    latents = encode_dataset(pipe.vae, images)
    del images
    fit_flow(pipe, latents, captions, cfg, recorder("flow"))
    bar.close()
    return save_model(pipe, cfg, losses, time.monotonic() - started)


def save_model(pipe, cfg: PretrainConfig, losses: dict, seconds: float) -> Path:
    """Write the pipeline (float16), config, losses, loss curve and samples atomically."""
    out = Path(cfg.output_dir)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pipe.set_progress_bar_config(disable=True)
    grid = sample_grid(pipe, cfg)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.to(torch.float16)
    pipe.save_pretrained(staging)
    (staging / "pretrain_config.yaml").write_text(dump_pretrain_config(cfg))
    (staging / "losses.json").write_text(
        json.dumps({"seconds": round(seconds, 1), "threads": cfg.threads, **losses})
    )
    plot_losses(losses, staging / "loss_curve.png")
    grid.save(staging / "samples.png")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m trainer.pretrain [CONFIG.yaml] [key=value ...]``."""
    parser = argparse.ArgumentParser(prog="python -m trainer.pretrain", description=__doc__)
    parser.add_argument("config", nargs="?", help="YAML file; omitted = the committed model's")
    parser.add_argument("overrides", nargs="*", help="dotted key=value, e.g. flow.steps=100")
    args = parser.parse_args(argv)
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # only overrides were given
        config, overrides = None, [config, *overrides]
    try:
        cfg = load_pretrain_config(config, overrides)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    out = pretrain(cfg)
    print(f"pretrained model written to {out}")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
