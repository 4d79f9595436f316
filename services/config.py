"""The reward services' config tree (twin of ``trainer/config.py`` for the serving side).

One ``ServicesConfig`` describes a Serve application: one deployment per reward, each with
its own resources, replicas or autoscaling, batching and optional ``runtime_env``; plus the
ingress (HTTP and gRPC) and the input limits. YAML files under ``deploy/serve/`` load into it
with the trainer's loader (:mod:`common.config_loader`): the same dotted ``key=value``
overrides and the same messages. Loading also checks every deployment's ``reward`` and
``params`` against that reward's own ``Config``, so a typo fails before Ray starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.config_loader import ConfigError, apply_overrides, format_errors, read_yaml, validate
from services.images import ImageLimits


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class AutoscalingConfig(_Strict):
    """Replica autoscaling of one deployment (maps onto Serve's ``autoscaling_config``)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float = Field(
        16.0, gt=0, description="queued + running requests per replica the autoscaler aims for"
    )
    upscale_delay_s: float = Field(5.0, ge=0)
    downscale_delay_s: float = Field(30.0, ge=0)
    look_back_period_s: float | None = Field(
        None, gt=0, description="window the load is averaged over (Serve's default: 30 s)"
    )
    metrics_interval_s: float | None = Field(
        None,
        gt=0,
        description="how often replicas report their load (Serve's default: 10 s; deprecated "
        "by Serve in favour of RAY_SERVE_*_AUTOSCALING_METRIC_PUSH_INTERVAL_S)",
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas={self.min_replicas} exceeds max_replicas={self.max_replicas}"
            )
        return self


class RewardDeploymentConfig(_Strict):
    """One reward model served as its own deployment."""

    reward: str = Field(description="registered reward name, e.g. 'pickscore'")
    module: str | None = Field(
        None,
        description="module that registers the reward when it lives outside services/rewards "
        "(e.g. 'bench.simulated_latency'); the driver and every replica import it first",
    )
    name: str | None = Field(None, description="deployment name; default: the reward name")
    params: dict[str, Any] = Field(default_factory=dict, description="the reward's own Config")
    num_replicas: int = Field(1, ge=1, description="ignored when autoscaling is set")
    autoscaling: AutoscalingConfig | None = None
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0, description="fractions share a GPU between rewards")
    memory_gb: float | None = Field(None, gt=0)
    max_batch_size: int = Field(
        32, ge=1, description="most images per model call, gathered across all callers"
    )
    batch_wait_timeout_s: float = Field(
        0.0,
        ge=0,
        description="how long a batch that is not full waits for more images; 0 = run at once "
        "when idle (under load, requests that arrive during a model call share the next one: "
        "docs/serving.md, 'Dynamic batching')",
    )
    max_ongoing_requests: int = Field(
        256, ge=1, description="raised well above the batch size so batches can fill"
    )
    runtime_env: dict[str, Any] | None = Field(
        None, description="own environment, e.g. {'pip': ['paddleocr>=3', 'paddlepaddle>=3']}"
    )
    health_check_period_s: float = Field(10.0, gt=0)
    health_check_timeout_s: float = Field(30.0, gt=0)
    max_surge_percent: int = Field(
        0,
        ge=0,
        le=100,
        description="extra replicas during a rolling upgrade, in % of num_replicas: with 100 "
        "the old replicas serve until the new ones are ready (needs room for them); 0 = "
        "Serve's stop-first roll (requests wait for the new replica: docs/failure-behaviour.md)",
    )

    @property
    def deployment_name(self) -> str:
        """The Serve deployment name of this reward."""
        return self.name or self.reward


class TlsConfig(_Strict):
    """HTTPS for Serve's HTTP proxy: PEM files that exist on every node running a proxy.

    Serve passes no ``ssl_cert_reqs`` to uvicorn, so it cannot require client certificates:
    mutual TLS, and TLS for gRPC, belong to a terminating proxy in front (docs/deployment.md).
    """

    certfile: str = Field(description="server certificate chain (PEM)")
    keyfile: str = Field(description="its private key (PEM)")


class IngressConfig(_Strict):
    """The external entry points: FastAPI over HTTP and the gRPC proxy."""

    host: str = Field("127.0.0.1", description="loopback unless told otherwise")
    http_port: int = Field(8000, ge=1, le=65535)
    grpc_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="0 = off (default). Serve's gRPC proxy listens on every interface and takes "
        "no host, so gRPC needs a bearer token (services/serving/exposure.py)",
    )
    route_prefix: str = "/"
    request_timeout_s: float = Field(120.0, gt=0, description="per reward call, in the ingress")
    auth_token_env: str = Field(
        "APEX_REWARD_TOKEN", description="env var holding the bearer token; unset = no auth"
    )
    auth_token_file: str | None = Field(
        None, description="file holding the bearer token (read at start; wins over the env var)"
    )
    allow_unauthenticated: bool = Field(
        False,
        description="start without a token although a port listens beyond loopback (gRPC, or "
        "a host other than 127.0.0.1): only on a closed network or in a test",
    )
    tls: TlsConfig | None = Field(
        None, description="HTTPS on Serve's HTTP proxy (gRPC: a terminating proxy in front)"
    )
    max_body_bytes: int = Field(64 * 2**20, ge=1024, description="largest HTTP request body")
    num_cpus: float = Field(0.25, ge=0)


class ServicesConfig(_Strict):
    """A whole reward-serving application."""

    app_name: str = "rewards"
    log_level: str = Field("INFO", description="replica log level (Serve's logging_config)")
    access_log: bool = Field(False, description="log every request (noisy under load)")
    deployments: list[RewardDeploymentConfig] = Field(min_length=1)
    ingress: IngressConfig = Field(default_factory=IngressConfig)
    limits: ImageLimits = Field(default_factory=ImageLimits)

    @model_validator(mode="after")
    def _unique_names(self) -> ServicesConfig:
        names = [d.deployment_name for d in self.deployments]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"deployment names must be unique; repeated: {', '.join(dupes)}")
        return self

    def deployment(self, name: str) -> RewardDeploymentConfig:
        """The deployment serving ``name``; ``KeyError`` listing the served names otherwise."""
        for dep in self.deployments:
            if dep.deployment_name == name:
                return dep
        served = ", ".join(d.deployment_name for d in self.deployments)
        raise KeyError(f"reward {name!r} is not served; served rewards: {served}")


def load_services_config(
    source: str | Path | dict, overrides: Sequence[str] = ()
) -> ServicesConfig:
    """Load a ``ServicesConfig`` from a YAML path or a dict, apply dotted ``key=value``
    overrides (``ingress.http_port=8123``), validate the tree and every reward's ``params``.

    Raises :class:`common.config_loader.ConfigError` (a ``ValueError``), one line per mistake
    naming the field, with a did-you-mean for an unknown key or reward.
    """
    if isinstance(source, dict):
        data, where = source, "(inline services config)"
    else:
        data, where = read_yaml(source), str(source)
    data, origins = apply_overrides(data, overrides)
    if overrides:
        where += " with overrides " + " ".join(overrides)
    config = validate(ServicesConfig, data, where, origins)
    problems = [
        problem
        for i, dep in enumerate(config.deployments)
        for problem in reward_problems(
            dep.reward, dep.params, dep.module, ("deployments", i, "reward")
        )
    ]
    if problems:
        head = f"invalid config {where}"
        if len(problems) > 1:
            head += f" ({len(problems)} problems)"
        raise ConfigError(head + ":\n" + "\n".join(f"  - {p}" for p in problems), problems)
    return config


def reward_problems(
    reward: str, params: dict[str, Any], module: str | None, name_at: Sequence[str | int]
) -> list[str]:
    """What a deployment would find wrong with ``reward`` and its ``params``, before anything
    starts: one line per mistake, naming the field and the reward.

    ``name_at`` is where the reward's name sits in the user's tree (``deployments.0.reward``,
    or the trainer's ``rewards.0.name``); the params are its sibling ``params``. An unknown
    name gets a did-you-mean; each bad params key is checked against the reward's own
    ``Config``. Imports the reward modules (torch, no weights, no Ray).
    """
    from services.rewards.base import get_reward_class, reward_names

    where = ".".join(str(p) for p in name_at)
    try:
        cls = get_reward_class(reward, module)
    except ImportError as exc:
        return [f"{where}: the module {module!r} of reward {reward!r} cannot be imported ({exc})"]
    except KeyError:
        known = reward_names()
        close = difflib.get_close_matches(reward, known, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ";"
        return [f"{where}: unknown reward '{reward}'{hint} known rewards: {', '.join(known)}"]
    try:
        cls.Config.model_validate(params)
    except ValidationError as err:
        prefix = (*name_at[:-1], "params")
        lines = format_errors(err, cls.Config, {}, prefix=prefix)
        return [f"{line} (reward '{reward}')" for line in lines]
    return []


def reward_params_model(reward: str, module: str | None = None) -> type[BaseModel]:
    """The pydantic model a reward's ``params`` validate against (its own ``Config``).

    ``KeyError`` for a name nobody registered. Imports the reward modules (torch, no weights,
    no Ray), and ``module`` if given, so that a launcher can check a config before anything
    starts.
    """
    from services.rewards.base import get_reward_class

    return get_reward_class(reward, module).Config
