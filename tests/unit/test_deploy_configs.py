"""Every deployment file under ``deploy/`` is checked offline by the tool that will read it.

- Cluster-launcher YAMLs (the ones with a top-level ``provider:``): Ray's own
  ``prepare_config`` + ``validate_config``, the checks ``ray up`` runs before it contacts the
  cloud (private API of ray 2.60; nothing here starts a node or needs credentials).
- Serve deploy configs (``deploy/serve/serve-deploy/``): Ray Serve's ``ServeDeploySchema``,
  plus a strict key check (that schema ignores unknown keys, so a typo would be dropped
  silently). Their ``args`` must load as the project's ServicesConfig, and the app must
  build through Serve's own builder call (binding needs no running Ray).
- KubeRay manifests (``deploy/kuberay/``): the fields the operator needs, GPU limits, and
  their embedded Serve config / training command, checked like the files above.
- Drift: the GPU Serve config serves the rewards of ``deploy/configs/sd35m-apex.yaml`` with the
  same params and per-replica resources. The RayService embeds the same applications. The
  node types and pods are large enough for what the configs ask of them.

Training configs under ``deploy/configs/`` are covered by ``test_shipped_configs.py``, and
ServicesConfig YAMLs directly under ``deploy/serve/`` by ``test_services_config.py``.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import re
import shlex
import typing
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from services.config import load_services_config
from services.rewards.base import build_reward
from trainer.config import load_config
from trainer.launch import services_config_dict

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SERVE_DEPLOY_DIR = DEPLOY / "serve" / "serve-deploy"
SERVE_DEPLOY_YAMLS = sorted(SERVE_DEPLOY_DIR.glob("*.y*ml"))
GPU_SERVE = SERVE_DEPLOY_DIR / "rewards-gpu.yaml"
KUBERAY_YAMLS = sorted((DEPLOY / "kuberay").glob("*.y*ml"))
PAPER_CONFIG = DEPLOY / "configs" / "sd35m-apex.yaml"
# Cluster-launcher files are found by a top-level `provider:` line, without parsing the
# other YAMLs under deploy/ (Prometheus, Grafana: other tests own those).
CLUSTER_YAMLS = sorted(
    p for p in DEPLOY.rglob("*.y*ml") if re.search(r"^provider:", p.read_text(), re.MULTILINE)
)
CLUSTER_ERRORS = (jsonschema.ValidationError, ValueError, RuntimeError)
# (vCPUs, GPUs) of the instance types the configs name or suggest. Ray detects these from AWS
# at `ray up`, which cannot run here.
INSTANCES = {
    "m5.4xlarge": (16, 0),
    "m5.8xlarge": (32, 0),
    "g5.12xlarge": (48, 4),
    "g5.48xlarge": (192, 8),
    "g6e.12xlarge": (48, 4),
    "p4d.24xlarge": (96, 8),
    "p4de.24xlarge": (96, 8),
    "p5.48xlarge": (192, 8),
}
# Ray Serve's pydantic models warn when ray.serve is first imported.
pytestmark = pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`")


@pytest.fixture(autouse=True)
def _reward_token(monkeypatch):
    """The cluster configs open ports beyond loopback: building them needs the bearer token."""
    monkeypatch.setenv("APEX_REWARD_TOKEN", "test-token")


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# --------------------------------------------------------------------------- checkers


def validate_cluster_config(config: dict) -> dict:
    """Ray's own offline validation of a cluster-launcher config; returns it with defaults."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _models_in(annotation) -> list[type[BaseModel]]:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def unknown_keys(model: type[BaseModel], data, where: str = "") -> list[str]:
    """Keys of ``data`` that ``model`` (recursively) has no field for."""
    if not isinstance(data, dict):
        return []
    fields = model.model_fields
    names = set(fields) | {f.alias for f in fields.values() if f.alias}
    found = []
    for key, value in data.items():
        if key not in names:
            found.append(f"{where}{key}")
            continue
        for sub in _models_in(fields[key].annotation):
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                index = f"{i}." if isinstance(value, list) else ""
                found += unknown_keys(sub, item, f"{where}{key}.{index}")
    return found


def import_attr(import_path: str):
    """What Serve imports for ``module.sub:attr``, through ``importlib``."""
    module, _, attr = import_path.partition(":")
    return getattr(importlib.import_module(module), attr)


def check_serve_deploy_config(doc: dict) -> list:
    """Validate a Serve deploy config like ``serve deploy`` would, and against the project.

    Returns ``(app schema, ServicesConfig, built Application)`` per application; raises
    ``ValueError`` naming the problem.
    """
    from pydantic import ValidationError
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema

    from services.serving.app import GRPC_SERVICER, INGRESS_NAME

    try:
        schema = ServeDeploySchema.model_validate(doc)
    except ValidationError as exc:
        raise ValueError(f"not a Serve deploy config: {exc}") from None
    extra = unknown_keys(ServeDeploySchema, doc)
    if extra:
        raise ValueError(f"keys Serve would ignore: {', '.join(extra)}")
    module, _, func = GRPC_SERVICER.rpartition(".")
    assert callable(getattr(importlib.import_module(module), func))
    built = []
    for raw, app in zip(doc["applications"], schema.applications, strict=True):
        config = load_services_config(app.args)  # ValueError naming the field
        # gRPC on: Serve's proxy must serve our RewardService; off: it must start no server
        servicers = [GRPC_SERVICER] if config.ingress.grpc_port else []
        if schema.grpc_options.grpc_servicer_functions != servicers:
            raise ValueError(f"grpc_servicer_functions must be {servicers}")
        for dep in config.deployments:
            build_reward(dep.reward, dep.params)  # the reward's own Config; loads nothing
        _check_serve_settings_match(schema, app, config)
        application = call_user_app_builder_with_args_if_necessary(
            import_attr(app.import_path), app.args
        )
        names = {INGRESS_NAME, *application._bound_deployment.init_args[0]}
        _check_overrides(raw.get("deployments", []), config, names)
        built.append((app, config, application))
    return built


def _check_serve_settings_match(schema, app, config) -> None:
    """Serve's own settings and the ServicesConfig in ``args`` say the same."""
    ingress = config.ingress
    pairs = {
        "application name / args.app_name": (app.name, config.app_name),
        "route_prefix / args.ingress.route_prefix": (app.route_prefix, ingress.route_prefix),
        "http_options.port / args.ingress.http_port": (schema.http_options.port, ingress.http_port),
        "http_options.host / args.ingress.host": (schema.http_options.host, ingress.host),
    }
    if ingress.grpc_port:  # grpc_options.port means nothing without servicers
        pairs["grpc_options.port / args.ingress.grpc_port"] = (
            schema.grpc_options.port,
            ingress.grpc_port,
        )
    for what, (serve_value, ours) in pairs.items():
        if serve_value != ours:
            raise ValueError(f"{what} differ: {serve_value!r} != {ours!r}")


# What an override may add to a deployment's ray_actor_options: where it runs, nothing else.
PLACEMENT_OPTIONS = {"resources", "accelerator_type", "label_selector"}


def _check_overrides(overrides: list[dict], config, names: set[str]) -> None:
    """Per-deployment overrides name real deployments and only add a placement pin.

    Serve REPLACES a deployment's ray_actor_options with an override's, so an override that
    leaves out a resource or a runtime_env silently drops it. Replicas, batching and the
    like belong in ``args`` (one place), so an override may not set them.
    """
    from services.serving.app import INGRESS_NAME, deployment_options

    for override in overrides:
        name = override["name"]
        if name not in names:
            raise ValueError(f"override for {name!r}: no such deployment")
        other = set(override) - {"name", "ray_actor_options"}
        if other:
            raise ValueError(f"override for {name!r} sets {sorted(other)}: set them in args")
        if name == INGRESS_NAME:
            expected = {"num_cpus": config.ingress.num_cpus}
        else:
            expected = deployment_options(config.deployment(name))["ray_actor_options"]
        actual = override.get("ray_actor_options", expected)
        dropped = {k: v for k, v in expected.items() if actual.get(k) != v}
        if dropped:
            raise ValueError(
                f"override for {name!r} changes or drops {dropped} of its args; "
                "repeat them (Serve replaces ray_actor_options)"
            )
        added = set(actual) - set(expected) - PLACEMENT_OPTIONS
        if added:
            raise ValueError(f"override for {name!r} adds {sorted(added)}: set them in args")


def _override_resources(doc: dict) -> set[str]:
    """Custom resources that the deployment overrides of a Serve config ask for."""
    return {
        name
        for app in doc["applications"]
        for dep in app.get("deployments", [])
        for name in dep.get("ray_actor_options", {}).get("resources", {})
    }


# --------------------------------------------------------------------------- coverage


def test_every_deploy_yaml_has_a_checker():
    """A YAML in one of these places is read by some test (none is silently unchecked)."""
    checked = {
        *CLUSTER_YAMLS,
        *SERVE_DEPLOY_YAMLS,
        *KUBERAY_YAMLS,
        *(DEPLOY / "serve").glob("*.y*ml"),  # ServicesConfig: test_services_config.py
        *(DEPLOY / "configs").glob("*.y*ml"),  # TrainConfig: test_shipped_configs.py
    }
    places = [*DEPLOY.glob("*.y*ml"), *(DEPLOY / "serve").rglob("*.y*ml"), *KUBERAY_YAMLS]
    assert DEPLOY / "cluster.yaml" in CLUSTER_YAMLS
    assert GPU_SERVE in SERVE_DEPLOY_YAMLS
    assert {"rayservice-rewards.yaml", "rayjob-train.yaml"} <= {p.name for p in KUBERAY_YAMLS}
    assert [p for p in places if p not in checked] == []


# --------------------------------------------------------------------------- cluster launcher


@pytest.mark.parametrize("path", CLUSTER_YAMLS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_cluster_yaml_passes_rays_own_validation(path):
    config = validate_cluster_config(_load(path))
    assert config["head_node_type"] in config["available_node_types"]


def _broken(change) -> dict:
    config = _load(DEPLOY / "cluster.yaml")
    change(config)
    return config


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda c: c.update(bogus_key=1), "bogus_key"),
        (lambda c: c.update(max_workers="six"), "'six' is not of type 'integer'"),
        (lambda c: c.update(head_node_type="nope"), "head_node_type"),
        (lambda c: c["available_node_types"]["reward_gpu"].update(min_worker=1), "min_worker"),
        (lambda c: c["available_node_types"]["head"].update(resources={"CPU": 0.5}), "0.5"),
        (lambda c: c["docker"].update(run_option=[]), "run_option"),
        (lambda c: c["provider"].update(cache_stopped_nodes="yes"), "'yes'"),
        (lambda c: c["available_node_types"]["reward_gpu"].update(min_workers=9), "min_workers"),
        (lambda c: c.pop("head_node_type"), "head_node_type"),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "bad-head-type",
        "unknown-node-key",
        "fractional-resource",
        "unknown-docker-key",
        "bool-as-string",
        "min-above-max",
        "no-head-type",
    ],
)
def test_a_broken_cluster_yaml_fails_rays_validation(change, words):
    with pytest.raises(CLUSTER_ERRORS, match=re.escape(words)):
        validate_cluster_config(_broken(change))


def test_cluster_yaml_node_types_fit_the_configs():
    """Head without GPUs; enough trainer GPUs; the rewards fit one reward node."""
    config = validate_cluster_config(_load(DEPLOY / "cluster.yaml"))
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU", 0) > 0 and not head["resources"].get("GPU")
    assert _instance(head)[1] == 0
    trainer = next(t for t in types.values() if "trainer_node" in t["resources"])
    reward = next(t for t in types.values() if "reward_node" in t["resources"])
    train = load_config(PAPER_CONFIG)
    vcpus, gpus = _instance(trainer)
    assert gpus * trainer["max_workers"] >= train.scaling.num_workers
    vcpus, gpus = _instance(reward)
    low, high, cpus = _reward_demand(
        load_services_config(_load(GPU_SERVE)["applications"][0]["args"])
    )
    assert low <= gpus and cpus <= vcpus, "the rewards no longer fit one reward node"
    assert high <= gpus * reward["max_workers"]
    assert reward["min_workers"] >= 1, "the reward app needs a node to start on"
    # Every custom resource the Serve config pins to exists on some node type.
    offered = {name for t in types.values() for name in t["resources"]}
    assert _override_resources(_load(GPU_SERVE)) <= offered


def _instance(node_type: dict) -> tuple[int, int]:
    kind = node_type["node_config"]["InstanceType"]
    if kind not in INSTANCES:
        pytest.skip(f"{kind}: add its (vCPUs, GPUs) to INSTANCES to check the sizing")
    return INSTANCES[kind]


def _reward_demand(services) -> tuple[float, float, float]:
    """GPUs at the fewest and the most replicas, and CPUs at the fewest, of all rewards."""
    low = high = cpus = 0.0
    for dep in services.deployments:
        scale = dep.autoscaling
        fewest = scale.min_replicas if scale else dep.num_replicas
        most = scale.max_replicas if scale else dep.num_replicas
        low += dep.num_gpus * fewest
        high += dep.num_gpus * most
        cpus += dep.num_cpus * fewest
    return low, high, cpus


def test_cluster_yaml_starts_ray_with_metrics_dashboard_and_autoscaling():
    config = _load(DEPLOY / "cluster.yaml")
    head = " ".join(config["head_start_ray_commands"])
    worker = " ".join(config["worker_start_ray_commands"])
    for flag in ("--head", "--metrics-export-port=8080", "--dashboard-host=0.0.0.0"):
        assert flag in head
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "--metrics-export-port=8080" in worker and "$RAY_HEAD_IP" in worker
    docker = config["docker"]
    run = " ".join(docker["run_options"])
    assert "-v /mnt/cache/huggingface:/home/ray/.cache/huggingface" in run
    assert "--shm-size" in " ".join(docker["head_run_options"])
    for name, node_type in config["available_node_types"].items():
        if name != config["head_node_type"]:
            assert "--shm-size" in " ".join(node_type["docker"]["worker_run_options"]), name
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands"):
        assert key in config, f"{key}: unset, Ray's default (a nightly wheel, boto3) applies"


def test_gcs_fault_tolerance_is_configured_with_a_redis_and_no_literal_password():
    head = " ".join(_load(DEPLOY / "cluster.yaml")["head_start_ray_commands"])
    assert 'export RAY_REDIS_ADDRESS="$(cat ~/.apex/redis_address)"' in head
    assert '--redis-password="$(cat ~/.apex/redis_password)"' in head
    assert head.index("RAY_REDIS_ADDRESS=") < head.index("ray start --head")
    options = _load(DEPLOY / "kuberay" / "rayservice-rewards.yaml")["spec"]["rayClusterConfig"][
        "gcsFaultToleranceOptions"
    ]
    host, port = options["redisAddress"].rsplit(":", 1)
    assert host and port.isdigit()
    assert options["redisPassword"]["valueFrom"]["secretKeyRef"]["key"] == "password"


def test_placeholders_are_marked():
    for path in [*CLUSTER_YAMLS, *KUBERAY_YAMLS]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "<you>" in line or "0123456789abcdef0" in line:
                assert "CHANGE ME" in line, f"{path.name}:{number}: unmarked placeholder"


# --------------------------------------------------------------------------- Serve deploy


@pytest.mark.parametrize("path", SERVE_DEPLOY_YAMLS, ids=lambda p: p.name)
def test_serve_deploy_config_validates_and_builds(path):
    built = check_serve_deploy_config(_load(path))
    assert [app.import_path for app, _, _ in built] == ["services.serving.app:app_builder"]
    app, config, application = built[0]
    handles = application._bound_deployment.init_args[0]
    assert list(handles) == [d.deployment_name for d in config.deployments]


def _gpu_doc() -> dict:
    return _load(GPU_SERVE)


def _drop_runtime_env(doc):
    doc["applications"][0]["deployments"][1]["ray_actor_options"].pop("runtime_env")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d.update(http_option={"port": 1}), "http_option"),
        (lambda d: d["applications"][0].update(import_paht="x"), "import_paht"),
        (lambda d: d["applications"][0].update(import_path="services"), "import path"),
        (lambda d: d["applications"][0]["args"].update(bogus=1), "bogus"),
        (
            lambda d: d["applications"][0]["args"]["deployments"][0].update(num_gpu=1),
            "deployments.0.num_gpu",
        ),
        (lambda d: d["http_options"].update(port=8001), "http_port"),
        (lambda d: d["applications"][0].update(name="other"), "app_name"),
        (lambda d: d["applications"][0]["deployments"][0].update(name="pick"), "'pick'"),
        (_drop_runtime_env, "runtime_env"),
        (lambda d: d["applications"][0]["deployments"][0].update(num_replicas=5), "num_replicas"),
        (
            lambda d: d["applications"][0]["deployments"][0]["ray_actor_options"].update(
                memory=2**30
            ),
            "memory",
        ),
        (lambda d: d["grpc_options"].update(grpc_servicer_functions=[]), "grpc_servicer"),
        (
            lambda d: d["applications"][0]["args"]["deployments"][0]["params"].update(bogus=1),
            "bogus",
        ),
    ],
    ids=[
        "unknown-top-key",
        "unknown-app-key",
        "bad-import-path",
        "unknown-args-key",
        "bad-deployment-field",
        "port-mismatch",
        "app-name-mismatch",
        "override-unknown-deployment",
        "override-drops-runtime-env",
        "override-sets-replicas",
        "override-adds-memory",
        "no-grpc-servicer",
        "bad-reward-param",
    ],
)
def test_a_broken_serve_deploy_config_is_rejected(change, words):
    doc = _gpu_doc()
    change(doc)
    with pytest.raises(ValueError, match=re.escape(words)):
        check_serve_deploy_config(doc)


def test_a_cluster_config_without_a_token_is_refused_at_build(monkeypatch):
    """rewards-gpu.yaml listens on 0.0.0.0 and gRPC: without a token the app does not build."""
    monkeypatch.delenv("APEX_REWARD_TOKEN")
    with pytest.raises(ValueError, match=r"gRPC on \[::\]:9000.*APEX_REWARD_TOKEN"):
        check_serve_deploy_config(_gpu_doc())


def test_gpu_serve_config_serves_the_paper_rewards_unchanged():
    """Same rewards, order, params and per-replica resources as sd35m-apex.yaml."""
    train = load_config(PAPER_CONFIG)
    args = _gpu_doc()["applications"][0]["args"]
    served = load_services_config(args)
    from_trainer = load_services_config(services_config_dict(train))
    assert [d.reward for d in served.deployments] == [r.name for r in train.rewards]
    assert served.app_name == train.reward_service.app_name
    assert served.ingress.request_timeout_s == train.reward_service.timeout_s
    for ours, theirs, reward in zip(
        served.deployments, from_trainer.deployments, train.rewards, strict=True
    ):
        assert ours.params == theirs.params, reward.name
        for key in ("num_gpus", "num_cpus", "max_batch_size", "runtime_env", "memory_gb"):
            assert getattr(ours, key) == getattr(theirs, key), f"{reward.name}.{key}"
        if ours.autoscaling is None:
            assert ours.num_replicas == theirs.num_replicas, reward.name
        else:  # autoscaling here, fixed replicas there: the range must hold them
            low, high = ours.autoscaling.min_replicas, ours.autoscaling.max_replicas
            assert low <= theirs.num_replicas <= high, reward.name


def test_local_serve_config_serves_what_local_yaml_serves():
    args = _load(SERVE_DEPLOY_DIR / "rewards-local.yaml")["applications"][0]["args"]
    ours = load_services_config(args)
    theirs = load_services_config(DEPLOY / "serve" / "local.yaml")
    assert ours.deployments == theirs.deployments
    assert ours.ingress == theirs.ingress


# --------------------------------------------------------------------------- KubeRay


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterConfig" if doc["kind"] == "RayService" else "rayClusterSpec"]


def _custom_resources(group: dict) -> dict:
    """The custom resources of a group: rayStartParams holds them as a quoted JSON string."""
    raw = group["rayStartParams"].get("resources")
    return json.loads(raw.strip('"').replace('\\"', '"')) if raw else {}


def _gpus(container: dict) -> int:
    return int(container["resources"]["limits"].get("nvidia.com/gpu", 0))


@pytest.mark.parametrize("path", KUBERAY_YAMLS, ids=lambda p: p.name)
def test_kuberay_manifest_has_what_the_operator_needs(path):
    import ray

    doc = _load(path)
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] in ("RayService", "RayJob") and doc["metadata"]["name"]
    spec = _cluster_spec(doc)
    assert spec["rayVersion"] == ray.__version__, "rayVersion must match the image's Ray"
    head = spec["headGroupSpec"]
    groups = spec["workerGroupSpecs"]
    image = _load(DEPLOY / "cluster.yaml")["docker"]["image"]
    for group in [head, *groups]:
        params = group["rayStartParams"]
        assert all(isinstance(v, str) for v in params.values()), "rayStartParams are strings"
        assert params.get("metrics-export-port") == "8080"
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == image, "same image as deploy/cluster.yaml"
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert limits.get("nvidia.com/gpu") == requests.get("nvidia.com/gpu")
        volumes = {v["name"] for v in pod.get("volumes", [])}
        assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes
        assert "/dev/shm" in {m["mountPath"] for m in container["volumeMounts"]}
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert _gpus(head["template"]["spec"]["containers"][0]) == 0, "the head has no GPU"
    assert groups and all(_gpus(g["template"]["spec"]["containers"][0]) > 0 for g in groups)
    for group in groups:
        assert group["groupName"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def _groups_with(spec: dict, resource: str) -> list[dict]:
    return [g for g in spec["workerGroupSpecs"] if resource in _custom_resources(g)]


def test_rayservice_serves_the_gpu_serve_config():
    doc = _load(DEPLOY / "kuberay" / "rayservice-rewards.yaml")
    serve_config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    ((app, config, _),) = check_serve_deploy_config(serve_config)
    assert callable(import_attr(app.import_path))
    assert serve_config["applications"] == _gpu_doc()["applications"]
    spec = _cluster_spec(doc)
    (group,) = _groups_with(spec, "reward_node")
    assert _override_resources(serve_config) == {"reward_node"}
    container = group["template"]["spec"]["containers"][0]
    low, high, cpus = _reward_demand(config)
    assert low <= _gpus(container) and cpus <= float(container["resources"]["limits"]["cpu"])
    assert high <= _gpus(container) * group["maxReplicas"]


def test_rayjob_runs_a_valid_training_command_that_fits_the_cluster():
    doc = _load(DEPLOY / "kuberay" / "rayjob-train.yaml")
    words = shlex.split(doc["spec"]["entrypoint"])
    start = words.index("python")
    assert words[start : start + 3] == ["python", "-m", "trainer.main"]
    config_path, *overrides = words[start + 3 :]
    train = load_config(REPO / config_path, overrides)  # the command's config validates
    assert train.scaling.ray_address == "auto"
    spec = _cluster_spec(doc)
    # The workers' custom resource pins them to one group, whose GPUs hold them all.
    (pin,) = train.scaling.resources_per_worker
    (group,) = _groups_with(spec, pin)
    per_pod = _gpus(group["template"]["spec"]["containers"][0])
    assert per_pod * group["maxReplicas"] >= train.scaling.num_workers
    # The run folder is on a volume that every pod mounts (Ray Train needs shared storage).
    run_dir = Path(train.logging.run_dir)
    assert run_dir.is_absolute()
    for g in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        mounts = g["template"]["spec"]["containers"][0]["volumeMounts"]
        assert any(run_dir.is_relative_to(m["mountPath"]) for m in mounts), g.get("groupName")
    # The rewards the trainer deploys fit the reward group.
    (rewards,) = _groups_with(spec, "reward_node")
    low, _, cpus = _reward_demand(load_services_config(services_config_dict(train)))
    container = rewards["template"]["spec"]["containers"][0]
    assert low <= _gpus(container) and cpus <= float(container["resources"]["limits"]["cpu"])
