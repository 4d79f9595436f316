"""`make sample`: a run's exported LoRA in diffusers' own pipeline, base and tuned side by side."""

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from trainer.config import TrainConfig
from trainer.model.pipeline import add_lora, load_pipeline, save_lora
from trainer.sample import SampleError, main, sample_run

TINY = {"kind": "tiny", "dtype": "float32", "tiny": {"seed": 0}}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished run folder: its config (tiny model) and a non-zero adapter in ``lora/``."""
    run = tmp_path_factory.mktemp("run")
    prompts = run / "prompts.txt"
    prompts.write_text('a red circle\na sign that says "hi"\na blue square\n')
    cfg = TrainConfig.model_validate(
        {
            "model": TINY,
            "lora": {"rank": 4, "alpha": 8.0},
            "sampling": {"resolution": 32, "eval_num_steps": 3, "eval_guidance_scale": 1.0,
                         "max_sequence_length": 16},
            "data": {"train_prompts": [str(prompts)], "eval_prompts": [str(prompts)]},
        }
    )  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    pipe = load_pipeline(cfg.model, "cpu")
    params = add_lora(pipe.transformer, cfg.lora, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in params:
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    save_lora(pipe.transformer, run / "lora")
    return run


def test_base_and_tuned_images_from_diffusers_pipeline(run_dir, tmp_path):
    paths = sample_run(run_dir, num=2, out=tmp_path / "out")
    base = [np.asarray(Image.open(paths["base"] / f"{i:03d}.png")) for i in range(2)]
    tuned = [np.asarray(Image.open(paths["tuned"] / f"{i:03d}.png")) for i in range(2)]
    assert base[0].shape == (32, 32, 3) and paths["side_by_side"].is_file()
    assert not np.array_equal(base[0], tuned[0])  # the adapter was applied
    again = sample_run(run_dir, num=2, out=tmp_path / "again")  # same seeds, same images
    assert np.array_equal(np.asarray(Image.open(again["tuned"] / "001.png")), tuned[1])


def test_a_run_without_its_adapter_or_config_exits_2_naming_the_path(run_dir, tmp_path, capsys):
    with pytest.raises(SampleError, match="config.yaml"):
        sample_run(tmp_path)
    (tmp_path / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    assert main([str(tmp_path)]) == 2
    assert "pytorch_lora_weights.safetensors not found" in capsys.readouterr().err
