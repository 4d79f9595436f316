"""The committed full-size configs build (on the meta device) with their documented sizes."""

from __future__ import annotations

import pytest

from bench.architectures import (
    EXPECTED_PARAMS,
    NAMES,
    build_meta,
    check_count,
    load,
    param_count,
    stored_values,
)


def test_every_json_has_a_documented_size_and_vice_versa():
    assert set(NAMES) == set(EXPECTED_PARAMS)


@pytest.mark.parametrize("name", NAMES)
def test_builds_on_meta_with_the_documented_count(name):
    model = build_meta(name)
    assert all(p.device.type == "meta" for p in model.parameters())
    check_count(name, stored_values(model))  # raises with the relative gap when off


def test_the_comparison_rejects_a_wrong_count():
    check_count("clip_vit_l14", 427_616_513)
    with pytest.raises(ValueError, match="clip_vit_l14.*documented"):
        check_count("clip_vit_l14", int(427.6e6 * 1.03))
    with pytest.raises(ValueError):
        check_count("clip_vit_l14", int(427.6e6 * 0.97))


def test_exact_counts_of_the_models_the_trainer_and_rewards_run():
    # exact values pin the configs themselves (a changed width or depth moves them)
    assert param_count("sd35_vae") == 83_819_683
    assert param_count("clip_vit_h14") == 986_109_441
    assert param_count("deqa_backbone") == 6_738_415_616
    transformer = build_meta("sd35_medium_transformer")
    trainable = sum(p.numel() for p in transformer.parameters())
    assert trainable == 2_243_171_520  # + 384^2 x 1536 positional buffer = the stored count
    assert stored_values(transformer) - trainable == 384 * 384 * 1536


def test_sd35_transformer_matches_the_text_encoders_it_is_fed_by():
    sd3 = load("sd35_medium_transformer").config
    clip_l, clip_g = load("clip_l_text").config, load("clip_g_text").config
    assert sd3["joint_attention_dim"] == load("t5_xxl_encoder").config["d_model"]
    assert sd3["pooled_projection_dim"] == clip_l["projection_dim"] + clip_g["projection_dim"]
    assert sd3["in_channels"] == load("sd35_vae").config["latent_channels"]
    model = build_meta("sd35_medium_transformer")
    assert sum(hasattr(b, "attn2") and b.attn2 is not None for b in model.transformer_blocks) == 13


def test_overrides_merge_into_nested_configs():
    model = build_meta("clip_vit_h14", overrides={"vision_config": {"num_hidden_layers": 1}})
    assert len(model.vision_model.encoder.layers) == 1
    assert len(model.text_model.encoder.layers) == 24
    with pytest.raises(KeyError, match="known"):
        load("sd4")


@pytest.mark.slow
def test_sd35_step_flops_at_512px_match_docs_performance():
    """The FLOP budget of docs/performance.md: one CFG step (2 rows) of the full transformer
    at 512 px with 77 + 128 prompt tokens, counted on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from trainer.config import LoraConfig
    from trainer.model.pipeline import add_lora

    model = build_meta("sd35_medium_transformer")
    params = add_lora(model, LoraConfig(), seed=0)
    assert sum(p.numel() for p in params) == 18_776_064
    inputs = dict(
        hidden_states=torch.empty(2, 16, 64, 64, device="meta"),
        timestep=torch.empty(2, device="meta"),
        encoder_hidden_states=torch.empty(2, 77 + 128, 4096, device="meta"),
        pooled_projections=torch.empty(2, 2048, device="meta"),
        return_dict=False,
    )
    with FlopCounterMode(display=False) as forward, torch.no_grad():
        model(**inputs)
    with FlopCounterMode(display=False) as train:
        model(**inputs)[0].float().mean().backward()
    assert forward.get_total_flops() / 1e12 == pytest.approx(4.494, rel=1e-3)
    assert train.get_total_flops() / 1e12 == pytest.approx(9.538, rel=1e-3)
