"""The serving config tree, its YAML files and how it maps onto Serve options (no Ray started).

``build_app`` applies ``serve.deployment(...).options(...).bind(...)``; binding only builds an
application graph, so it runs without a Ray cluster and is checked here too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from services.config import (
    AutoscalingConfig,
    RewardDeploymentConfig,
    ServicesConfig,
    load_services_config,
)

REPO = Path(__file__).resolve().parents[2]
SERVE_YAMLS = sorted((REPO / "deploy" / "serve").glob("*.y*ml"))
# Ray Serve's own pydantic models warn when ray.serve is first imported (by services.serving.app).
pytestmark = pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`")
MINIMAL = {"deployments": [{"reward": "jpeg_compressibility"}]}


def _with(deployment: dict | None = None, **top) -> dict:
    """A minimal config with one deployment's fields and top-level sections replaced."""
    dep = {"reward": "jpeg_compressibility", **(deployment or {})}
    return {"deployments": [dep], **top}


# --------------------------------------------------------------------------- loading


def test_minimal_dict_gets_the_documented_defaults():
    config = load_services_config(MINIMAL)
    assert isinstance(config, ServicesConfig)
    assert config.app_name == "rewards"
    dep = config.deployments[0]
    assert dep.deployment_name == "jpeg_compressibility"
    assert (dep.num_replicas, dep.autoscaling, dep.runtime_env) == (1, None, None)
    assert config.ingress.host == "127.0.0.1"  # loopback unless told otherwise
    assert config.ingress.grpc_port == 0  # off: Serve's gRPC proxy binds every interface
    assert config.ingress.allow_unauthenticated is False
    assert config.limits.max_images == 256


def test_yaml_path_and_str_path_load_the_same_config(tmp_path):
    data = _with({"name": "jpeg_a", "num_cpus": 0.5}, app_name="mine")
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(data))
    from_path = load_services_config(path)
    assert from_path == load_services_config(str(path)) == load_services_config(data)
    assert from_path.app_name == "mine"
    assert from_path.deployment("jpeg_a").num_cpus == 0.5


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({**MINIMAL, "bogus": 1}, ["unknown key 'bogus'", "valid keys at the top level"]),
        (_with({"num_gpu": 1}), ["deployments.0.num_gpu"]),
        (_with(ingress={"http_prot": 80}), ["ingress.http_prot"]),
        (_with(limits={"max_image": 3}), ["limits.max_image"]),
        (_with({"num_cpus": -1}), ["deployments.0.num_cpus"]),
        (_with({"num_replicas": 0}), ["deployments.0.num_replicas"]),
        (_with({"max_batch_size": "lots"}), ["deployments.0.max_batch_size"]),
        (_with({"memory_gb": 0}), ["deployments.0.memory_gb"]),
        (_with({"health_check_period_s": 0}), ["deployments.0.health_check_period_s"]),
        (_with(ingress={"http_port": 70000}), ["ingress.http_port"]),
        (_with(ingress={"max_body_bytes": 10}), ["ingress.max_body_bytes"]),
        (_with({"autoscaling": {"max_replicas": 0}}), ["deployments.0.autoscaling.max_replicas"]),
        ({"deployments": []}, ["deployments"]),
        ({}, ["deployments", "required"]),
        (_with({"reward": None}), ["deployments.0.reward"]),
    ],
)
def test_bad_fields_are_named(data, words):
    with pytest.raises(ValueError, match="invalid config") as info:
        load_services_config(data)
    for word in words:
        assert word in str(info.value)


def test_duplicate_deployment_names_are_listed():
    data = {
        "deployments": [
            {"reward": "pickscore"},
            {"reward": "aesthetic", "name": "pickscore"},
            {"reward": "ocr"},
            {"reward": "ocr", "params": {"engine": "onnx"}},
            {"reward": "deqa", "name": "second"},
        ]
    }
    with pytest.raises(ValueError, match="unique") as info:
        load_services_config(data)
    assert "repeated: ocr, pickscore" in str(info.value)
    # Distinct names for the same reward are fine (two configs of one model side by side).
    data["deployments"][3]["name"] = "ocr_onnx"
    data["deployments"][1]["name"] = "aesthetic"
    assert len(load_services_config(data).deployments) == 5


def test_autoscaling_min_above_max_is_rejected_naming_both():
    with pytest.raises(ValueError) as info:
        load_services_config(_with({"autoscaling": {"min_replicas": 5, "max_replicas": 2}}))
    message = str(info.value)
    assert "deployments.0.autoscaling" in message
    assert "min_replicas=5" in message and "max_replicas=2" in message
    assert AutoscalingConfig(min_replicas=3, max_replicas=3).max_replicas == 3


def test_a_bad_reward_param_is_found_when_the_config_loads():
    data = _with({"params": {"variant": "tiny", "sead": 3}})
    with pytest.raises(ValueError) as info:
        load_services_config(data)
    (problem,) = info.value.problems
    assert problem.startswith("unknown key 'deployments.0.params.sead'; did you mean")
    assert problem.endswith(f"(reward '{data['deployments'][0]['reward']}')")


def test_overrides_use_the_trainers_syntax_and_messages():
    config = load_services_config(MINIMAL, ["ingress.http_port=8123", "deployments.0.num_cpus=2"])
    assert config.ingress.http_port == 8123 and config.deployments[0].num_cpus == 2
    with pytest.raises(ValueError, match="did you mean 'ingress.http_port'") as info:
        load_services_config(MINIMAL, ["ingress.http_prot=1"])
    assert "(set by override 'ingress.http_prot=1')" in str(info.value)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ValueError, match="not found") as info:
        load_services_config(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(ValueError, match="is not a file"):
        load_services_config(tmp_path)  # a directory is not a config file


def test_empty_yaml_file_reports_the_missing_deployments(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(ValueError, match="deployments"):
        load_services_config(path)


def test_yaml_whose_top_level_is_not_a_mapping_is_a_value_error(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- reward: pickscore\n")
    with pytest.raises(ValueError, match="must be a mapping"):
        load_services_config(path)


def test_malformed_yaml_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("deployments: [\n  - reward: pickscore\n")
    with pytest.raises(ValueError, match="broken.yaml"):
        load_services_config(path)


def test_deployment_lookup_and_keyerror_lists_the_served_names():
    config = load_services_config(
        {"deployments": [{"reward": "pickscore"}, {"reward": "ocr", "name": "ocr_fast"}]}
    )
    assert config.deployment("ocr_fast").reward == "ocr"
    assert config.deployment("pickscore").deployment_name == "pickscore"
    with pytest.raises(KeyError) as info:
        config.deployment("ocr")  # the reward name is not the deployment name here
    assert "served rewards: pickscore, ocr_fast" in str(info.value)


@pytest.mark.parametrize("path", SERVE_YAMLS, ids=lambda p: p.name)
def test_every_shipped_serve_yaml_loads(path):
    config = load_services_config(path)
    assert config.deployments
    for dep in config.deployments:
        assert config.deployment(dep.deployment_name) is dep


def test_the_shipped_serve_yamls_were_found():
    assert SERVE_YAMLS, "deploy/serve/ holds no YAML file"


# --------------------------------------------------------------------------- Serve options


def test_deployment_options_map_resources_and_health_checks():
    from services.serving.app import deployment_options

    dep = RewardDeploymentConfig(
        reward="ocr",
        name="ocr_paddle",
        num_cpus=2,
        num_gpus=0.25,
        memory_gb=1.5,
        runtime_env={"pip": ["paddleocr>=3"]},
        max_ongoing_requests=64,
        num_replicas=3,
        health_check_period_s=2.0,
        health_check_timeout_s=7.0,
    )
    options = deployment_options(dep)
    assert options == {
        "name": "ocr_paddle",
        "ray_actor_options": {
            "num_cpus": 2.0,
            "num_gpus": 0.25,  # fractions pass through: rewards share a GPU
            "memory": int(1.5 * 2**30),
            "runtime_env": {"pip": ["paddleocr>=3"]},
        },
        "max_ongoing_requests": 64,
        "health_check_period_s": 2.0,
        "health_check_timeout_s": 7.0,
        "max_surge_percent": 0,  # Serve's stop-first roll unless the config asks for surge
        "num_replicas": 3,
    }
    assert isinstance(options["ray_actor_options"]["memory"], int)


def test_deployment_options_omit_unset_memory_and_runtime_env():
    from services.serving.app import deployment_options

    actor = deployment_options(RewardDeploymentConfig(reward="deqa"))["ray_actor_options"]
    assert actor == {"num_cpus": 1.0, "num_gpus": 0.0}


def test_autoscaling_replaces_num_replicas():
    from services.serving.app import deployment_options

    dep = RewardDeploymentConfig(
        reward="pickscore",
        num_replicas=5,  # ignored when autoscaling is set
        autoscaling={"min_replicas": 0, "max_replicas": 3, "target_ongoing_requests": 8},
    )
    options = deployment_options(dep)
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {
        "min_replicas": 0,
        "max_replicas": 3,
        "target_ongoing_requests": 8.0,
        "upscale_delay_s": 5.0,
        "downscale_delay_s": 30.0,
    }  # initial_replicas is None, so it is left to Serve
    dep = dep.model_copy(update={"autoscaling": AutoscalingConfig(initial_replicas=2)})
    assert deployment_options(dep)["autoscaling_config"]["initial_replicas"] == 2


# --------------------------------------------------------------------------- app_builder


def _bound(app):
    """The deployment behind a bound Serve application (``Application`` keeps it private)."""
    return app._bound_deployment


def test_app_builder_binds_the_shipped_config_without_ray(monkeypatch):
    import ray

    from services.serving.app import INGRESS_NAME, app_builder

    monkeypatch.delenv("APEX_REWARD_TOKEN", raising=False)
    path = REPO / "deploy" / "serve" / "local.yaml"
    config = load_services_config(path)
    was_running = ray.is_initialized()  # True only after integration tests in the same run
    ingress = _bound(app_builder({"config": str(path)}))
    assert ray.is_initialized() == was_running  # binding builds a graph; it starts no cluster
    assert ingress.name == INGRESS_NAME
    handles, needs_prompt, ingress_config, limits = ingress.init_args
    names = [d.deployment_name for d in config.deployments]
    assert list(handles) == list(needs_prompt) == names
    assert needs_prompt["prompt_alignment"] is True and needs_prompt["colorfulness"] is False
    assert ingress_config == config.ingress.model_dump(mode="json")
    assert limits == config.limits.model_dump(mode="json")
    for dep in config.deployments:
        bound = _bound(handles[dep.deployment_name])
        assert bound.name == dep.deployment_name
        assert bound.ray_actor_options["num_cpus"] == dep.num_cpus
        assert bound.num_replicas == dep.num_replicas
        assert bound.init_args == (dep.model_dump(mode="json"), limits)


def test_app_builder_accepts_an_inline_config_and_a_path_object(tmp_path):
    from services.serving.app import app_builder

    inline = {
        "app_name": "inline",
        "deployments": [
            {"reward": "jpeg_compressibility", "name": "jpeg", "num_gpus": 0.5},
            {
                "reward": "aesthetic",
                "autoscaling": {"min_replicas": 1, "max_replicas": 2},
            },
        ],
    }
    handles = _bound(app_builder(inline)).init_args[0]
    assert list(handles) == ["jpeg", "aesthetic"]
    assert _bound(handles["jpeg"]).ray_actor_options["num_gpus"] == 0.5
    path = tmp_path / "inline.yaml"
    path.write_text(yaml.safe_dump(inline))
    assert list(_bound(app_builder({"config": path})).init_args[0]) == ["jpeg", "aesthetic"]


def test_app_builder_errors_name_the_field():
    from services.serving.app import app_builder

    with pytest.raises(ValueError, match="deployments.0.num_cpus"):
        app_builder({"deployments": [{"reward": "ocr", "num_cpus": -1}]})
    # `config=` next to other keys is not a path: the extra key is reported.
    with pytest.raises(ValueError, match="config"):
        app_builder({"config": "deploy/serve/local.yaml", "app_name": "x"})


def test_app_builder_rejects_an_unregistered_reward():
    from services.serving.app import app_builder

    with pytest.raises((KeyError, ValueError), match="no_such_reward"):
        app_builder({"deployments": [{"reward": "no_such_reward"}]})


def test_grpc_message_limit_follows_the_http_body_limit(monkeypatch):
    from services.serving.app import GRPC_LIMIT_ENV, limit_grpc_messages

    config = load_services_config({"deployments": [{"reward": "ocr"}]})
    monkeypatch.delenv(GRPC_LIMIT_ENV, raising=False)
    limit_grpc_messages(config)
    assert os.environ[GRPC_LIMIT_ENV] == str(config.ingress.max_body_bytes)
    monkeypatch.setenv(GRPC_LIMIT_ENV, "123")  # an explicit setting wins
    limit_grpc_messages(config)
    assert os.environ[GRPC_LIMIT_ENV] == "123"
