"""How far do the training rollouts stray from what evaluation samples? (few-step SDE noise)

Flow-GRPO's SDE (method.md section 2) injects `std_t * sqrt(-dt)` of noise per step. At 10
steps that is the paper's setting; at the 4 steps `make train` uses, SD3's schedule
(1, 0.858, 0.602, 0.009, 0) ends with one large step, and the discrete step leaves much more
noise in the final latent than the flow's marginal at sigma 0.009 has. This benchmark samples
the same prompts from the same initial noise with each (steps, noise level) setting, in
process (no Ray), and reports each reward's mean and the latent distance from the evaluation
sampler (the 16-step ODE), so a user can pick a noise level for a step count. A setting may
name the stochastic step (`sampling.sde_type`): `4:0.7:cps` is Coefficients-Preserving
Sampling, whose samples keep the flow's noise level (trainer/core/sde.py).

    python bench/rollout_noise.py                          # make train's model and rewards
    python bench/rollout_noise.py --settings 4:0.7,4:0.4,4:0.7:cps --prompts 16

Columns: `ocr`, `align`, `colour` (higher is better), `jpeg` (-kB, higher is smaller files):
means over the prompts of one image each; `resid`: std of the final latent's difference from
the 16-step ODE sample of the same initial noise (0 = the evaluation image; report only, no
target); `grain`: std of the final latent minus its 3x3 box blur (the high-frequency part,
where excess sampler noise shows; compare with the reference row). Prints a table and writes
JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.rewards.base import build_reward  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.core.sde import SDE_TYPES  # noqa: E402
from trainer.loop.data import load_prompts  # noqa: E402
from trainer.model.pipeline import load_pipeline  # noqa: E402
from trainer.model.prompts import encode_prompts  # noqa: E402
from trainer.model.rollout import sample  # noqa: E402

CONFIG = ROOT / "deploy" / "configs" / "local.yaml"
SHORT = {"prompt_alignment": "align", "colorfulness": "colour", "jpeg_compressibility": "jpeg"}
REFERENCE = (16, 0.0, "flow_grpo")
Setting = tuple[int, float, str]


def parse_settings(text: str) -> list[Setting]:
    """``"4:0.7,8:0.4:cps"`` -> ``[(4, 0.7, "flow_grpo"), (8, 0.4, "cps")]``; names the entry
    that does not parse."""
    out = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        try:
            steps, noise, *kind = item.split(":")
            sde_type = kind[0] if kind else "flow_grpo"
            if len(kind) > 1 or sde_type not in SDE_TYPES:
                raise ValueError(item)
            out.append((int(steps), float(noise), sde_type))
        except ValueError:
            raise SystemExit(
                f"--settings: {item!r} is not STEPS:NOISE[:TYPE], e.g. 4:0.7 or 4:0.7:cps "
                f"(TYPE one of {list(SDE_TYPES)})"
            ) from None
    return out


def grain(latents: torch.Tensor) -> float:
    """Std of ``[B, C, h, w]`` latents minus their 3x3 box blur: their high-frequency part."""
    blurred = torch.nn.functional.avg_pool2d(
        latents, 3, stride=1, padding=1, count_include_pad=False
    )
    return float((latents - blurred).std())


def run(settings: list[Setting], num_prompts: int, seed: int) -> list[dict]:
    """One row per setting (the 16-step ODE reference first): reward means and latent resid."""
    cfg = load_config(CONFIG, [])
    pipe = load_pipeline(cfg.model)
    prompts = load_prompts([ROOT / p for p in cfg.data.eval_prompts])[:num_prompts]
    embeds = encode_prompts(
        pipe, prompts, max_sequence_length=cfg.sampling.max_sequence_length, guidance_scale=1.0
    )
    rewards = {r.name: build_reward(r.name, r.params) for r in cfg.rewards}
    for reward in rewards.values():
        reward.load()

    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(seed * 100_003 + i) for i in range(len(prompts))]

    rows, reference = [], None
    for steps, noise, sde_type in [REFERENCE, *settings]:
        started = time.perf_counter()
        rollout = sample(
            pipe,
            embeds,
            num_steps=steps,
            guidance_scale=1.0,
            noise_level=noise,
            resolution=cfg.sampling.resolution,
            generator=generators(),
            sde_type=sde_type,
        )
        final = rollout.latents[:, -1]
        reference = final if reference is None else reference
        row = {"steps": steps, "noise_level": noise, "sde_type": sde_type}
        row["seconds"] = time.perf_counter() - started
        for name, reward in rewards.items():
            scores = [s for s in reward.score(list(rollout.images), prompts) if s is not None]
            row[name] = float(np.mean(scores)) if scores else None
        row["resid"] = float((final - reference).std())
        row["grain"] = grain(final)
        rows.append(row)
        print(_line(row, list(rewards)), flush=True)
    return rows


def _line(row: dict, names: list[str]) -> str:
    cells = [f"{row['steps']:>5}", f"{row['noise_level']:>5.2f}", f"{row['sde_type']:>9}"]
    cells += [f"{row[n]:>7.3f}" if row[n] is not None else "      -" for n in names]
    return "  ".join([*cells, f"{row['resid']:>6.3f}", f"{row['grain']:>6.3f}"])


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--settings", default="4:0,4:0.7,4:0.5,4:0.4,4:0.3,8:0.7,10:0.7,4:0.7:cps,4:0.5:cps"
    )
    parser.add_argument("--prompts", type=int, default=32, help="held-out prompts, one image each")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="results/bench/rollout_noise.json")
    args = parser.parse_args(argv)
    settings = parse_settings(args.settings)
    torch.set_num_threads(2)
    names = [r.name for r in load_config(CONFIG, []).rewards]
    header = "steps  noise       type  " + "  ".join(f"{SHORT.get(n, n):>7}" for n in names)
    print(header + "   resid   grain")
    rows = run(settings, args.prompts, args.seed)
    print("ocr/align/colour: higher is better; jpeg = -kB (higher = smaller files); resid: std")
    print("of the final latent minus the 16-step ODE sample from the same noise; grain: std of")
    print("the final latent's high-frequency part (compare with the 16-step row; report only)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"prompts": args.prompts, "seed": args.seed, "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
