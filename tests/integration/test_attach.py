"""A trainer next to running reward services: it uses them, and never replaces them.

The session's reward app stands in for ``make serve``; the trainer's launch functions run
against it on the same Ray, as ``make train ARGS=reward_service.deploy=false`` does after
joining (tests/integration/test_user_path.py runs the two real processes).
"""

from __future__ import annotations

import logging

import pytest

from tests.integration.training_runs import ROOT
from trainer.config import load_config
from trainer.launch import LaunchError, check_room, deploy_rewards, running_reward_configs

pytestmark = pytest.mark.integration


def _cfg(*overrides: str):
    return load_config(ROOT / "deploy" / "configs" / "local-random.yaml", list(overrides))


def test_running_app_reports_each_rewards_config(reward_app):
    running = running_reward_configs(reward_app.app_name)
    assert {"ocr", "pickscore", "jpeg_compressibility"} <= set(running)
    assert running["ocr"]["engine"] == "onnx"
    assert running_reward_configs("no-such-app") is None


def test_deploy_false_uses_the_running_app_and_names_param_differences(reward_app, caplog):
    cfg = _cfg(
        "reward_service.deploy=false",
        "rewards=[{name: ocr, params: {engine: onnx, min_confidence: 0.25}}, {name: colorfulness}]",
    )
    before = running_reward_configs(reward_app.app_name)
    with caplog.at_level(logging.WARNING):
        deploy_rewards(cfg, local=False)
    assert "rewards.0.params.min_confidence: 0.25 here, 0.5 in the running app" in caplog.text
    assert running_reward_configs(reward_app.app_name) == before  # nothing redeployed


def test_deploy_false_with_a_reward_the_app_lacks_is_refused(reward_app):
    cfg = _cfg("reward_service.deploy=false", "rewards=[{name: ocr}, {name: prompt_alignment}]")
    with pytest.raises(LaunchError, match="does not serve prompt_alignment"):
        deploy_rewards(cfg, local=False)


def test_redeploying_a_running_app_with_other_rewards_is_refused(reward_app):
    cfg = _cfg("rewards=[{name: ocr, params: {min_confidence: 0.25}}]")
    before = running_reward_configs(reward_app.app_name)
    with pytest.raises(LaunchError) as err:
        deploy_rewards(cfg, local=False)
    message = str(err.value)
    assert "rewards.0.params.min_confidence: 0.25 here, 0.5 in the running app" in message
    assert "the running app also serves 'pickscore'" in message
    assert "reward_service.redeploy=true" in message
    assert running_reward_configs(reward_app.app_name) == before


def test_workers_that_cannot_be_placed_fail_fast_on_a_joined_cluster(reward_app):
    cfg = _cfg("scaling.use_gpu=false", "scaling.resources_per_worker={CPU: 1000}")
    with pytest.raises(LaunchError, match=r"need 1000 CPU \(free: "):
        check_room(cfg, joined_for_rewards=True)
    check_room(cfg, joined_for_rewards=False)  # a cluster that may autoscale: a warning only
