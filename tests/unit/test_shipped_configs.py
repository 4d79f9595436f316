"""Every shipped training config is usable end to end: its reward params and serving settings
validate against the reward services' own config models, not only the trainer's."""

from pathlib import Path

import pytest

from services.config import load_services_config
from services.rewards.base import build_reward
from trainer.config import load_config
from trainer.launch import services_config_dict

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "deploy" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_rewards_and_serving_settings_validate(path):
    cfg = load_config(path)
    services = load_services_config(services_config_dict(cfg))
    assert [d.reward for d in services.deployments] == [r.name for r in cfg.rewards]
    for reward in cfg.rewards:
        model = build_reward(reward.name, reward.params)  # validates params; loads nothing
        assert not model.loaded


def test_a_bad_reward_param_names_the_field():
    cfg = load_config(CONFIGS[0], ["rewards.0.params.bogus=1"])
    with pytest.raises(ValueError, match=r"bogus"):
        build_reward(cfg.rewards[0].name, cfg.rewards[0].params)
