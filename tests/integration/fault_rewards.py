"""Fault injection for the training fault tests: a reward that can be made slow or be held.

:class:`FaultyReward` wraps a real registered reward and scores exactly like it, unless a
control file in its folder says otherwise:

- ``slow`` (content: seconds): every scoring call first sleeps that long, and appends a line
  to ``slow_calls``;
- ``hold``: the first call that removes it writes ``held`` and sleeps for a minute, so a test
  can kill its replica while the request is in flight (the file is taken once: a replacement
  replica scores normally).

Files, not messages, because the replica runs in another process and a replacement replica
must see the same switches. The wrapper is handed to the real ``RewardDeployment`` (which
accepts a model, for tests), so the Serve path (batching, errors, health checks) is the
production one. It lives in an importable module: Serve unpickles it in the replica.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.rewards.base import RewardConfig, RewardModel, build_reward

HOLD_S = 60.0  # far longer than the test needs to kill the holding replica


class FaultyReward(RewardModel):
    """A registered reward, scored as is, with file-controlled latency and a one-shot hold."""

    name = "faulty"

    def __init__(self, reward: str, params: dict[str, Any], control_dir: str | Path):
        super().__init__(RewardConfig())
        self.inner = build_reward(reward, params)
        self.needs_prompt = self.inner.needs_prompt
        self.control = Path(control_dir)

    def load(self) -> None:
        """Load the wrapped reward."""
        self.inner.load()
        self.loaded = True

    def health_check(self) -> None:
        """The wrapped reward's own check, never slowed or held."""
        self.inner.health_check()

    def model_info(self):
        """The wrapped reward's model."""
        return self.inner.model_info()

    def unscored_reason(self, prompt):
        """The wrapped reward's reason."""
        return self.inner.unscored_reason(prompt)

    def score(self, images: Sequence[Any], prompts: Sequence[str | None]) -> list[float | None]:
        """Apply the switches in the control folder, then score with the wrapped reward."""
        slow = self.control / "slow"
        if slow.is_file():
            with open(self.control / "slow_calls", "a") as log:
                log.write(f"{time.time()} {len(images)}\n")
            time.sleep(float(slow.read_text() or 0))
        try:
            os.remove(self.control / "hold")
        except FileNotFoundError:
            pass
        else:
            (self.control / "held").write_text(str(os.getpid()))
            time.sleep(HOLD_S)
        return self.inner.score(images, prompts)


class FaultAppRoot:
    """Ingress of the fault app: only holds the reward deployments (no HTTP route)."""

    def __init__(self, handles: dict[str, Any]):
        self.handles = handles

    def names(self) -> list[str]:
        """The deployments of the app."""
        return sorted(self.handles)


def deploy_fault_app(app_name: str, deployments: list[dict], control_dir: Path) -> None:
    """Deploy ``deployments`` (services config entries) as app ``app_name``, every reward
    wrapped in a :class:`FaultyReward` controlled from ``control_dir/<deployment name>/``."""
    from ray import serve

    from services.config import RewardDeploymentConfig
    from services.serving.app import deployment_options
    from services.serving.deployment import RewardDeployment

    handles = {}
    for entry in deployments:
        dep = RewardDeploymentConfig.model_validate(entry)
        folder = control_dir / dep.deployment_name
        folder.mkdir(parents=True, exist_ok=True)
        model = FaultyReward(dep.reward, dep.params, folder)
        deployment = serve.deployment(RewardDeployment).options(
            **deployment_options(dep), logging_config={"log_level": "WARNING"}
        )
        handles[dep.deployment_name] = deployment.bind(dep.model_dump(mode="json"), {}, model)
    root = serve.deployment(FaultAppRoot).options(ray_actor_options={"num_cpus": 0})
    serve.run(root.bind(handles), name=app_name, route_prefix=None)
