"""The reward services' config tree (twin of ``trainer/config.py`` for the serving side).

One ``ServicesConfig`` describes a Serve application: one deployment per reward, each with
its own resources, replicas or autoscaling, batching and optional ``runtime_env``; plus the
ingress (HTTP and gRPC) and the input limits. YAML files under ``deploy/serve/`` load into it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
    name: str | None = Field(None, description="deployment name; default: the reward name")
    params: dict[str, Any] = Field(default_factory=dict, description="the reward's own Config")
    num_replicas: int = Field(1, ge=1, description="ignored when autoscaling is set")
    autoscaling: AutoscalingConfig | None = None
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0, description="fractions share a GPU between rewards")
    memory_gb: float | None = Field(None, gt=0)
    max_batch_size: int = Field(32, ge=1, description="dynamic batching across all callers")
    batch_wait_timeout_s: float = Field(0.01, ge=0)
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


def load_services_config(source: str | Path | dict) -> ServicesConfig:
    """Load a ``ServicesConfig`` from a YAML path or a dict; ``ValueError`` naming the field."""
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"services config not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"services config {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"services config {path} must be a mapping at the top level")
    try:
        return ServicesConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ValueError(f"bad services config: {problems}") from None


def reward_params_model(reward: str) -> type[BaseModel]:
    """The pydantic model a reward's ``params`` validate against (its own ``Config``).

    ``KeyError`` for a name nobody registered. Imports the reward modules (torch, no weights,
    no Ray), so that a launcher can check a config before anything starts.
    """
    from services.rewards.base import get_reward_class

    return get_reward_class(reward).Config


def known_rewards() -> list[str]:
    """Every registered reward name, sorted (the valid values of a deployment's ``reward``)."""
    from services.rewards.base import reward_names

    return reward_names()
