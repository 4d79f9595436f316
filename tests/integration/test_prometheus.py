"""A real Prometheus scrapes the session's Ray; every dashboard query works against it.

Reward traffic (every reward, one bad image each so that errors exist) and a two-epoch
training run fill the ``ray_reward_*``, ``ray_serve_*`` and ``ray_apex_*`` metrics. Then
every metric that a dashboard panel or variable reads must be in Prometheus with data, and
every panel's PromQL must be accepted and return data over the test's time window. Also:
the shipped Prometheus configs pass ``promtool check config``, and ``make monitor``'s script
starts and stops Prometheus. Without the binaries these tests skip, except under CI.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from services.client import RewardClient
from tests import dashboards as dash
from tests.integration.conftest import REWARD_DEPLOYMENTS, free_port
from tests.integration.training_runs import REWARDS, fit

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONFIGS = sorted((ROOT / "deploy" / "prometheus").glob("*.yml"))
DATA_TIMEOUT_S = 60.0
# Concrete values for the dashboards' own variables: a deployed reward that the traffic scores,
# and an objective of the training runs.
VARIABLES = {"reward": "aesthetic", "objective": REWARDS[-1]}


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not on PATH (Debian: apt-get install prometheus)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must install it (.ci/run does)")
    pytest.skip(message)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"prometheus exited with {process.returncode}"
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"prometheus not ready at {url} after {timeout_s} s")


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_shipped_prometheus_configs_pass_promtool(path):
    promtool = _binary("promtool")
    out = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture(scope="module")
def prometheus(ray_cluster, tmp_path_factory):
    """Prometheus on a free loopback port scraping the session's Ray every second."""
    binary = _binary("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    target = f"127.0.0.1:{os.environ['APEX_TEST_METRICS_PORT']}"
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: ray\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    url = f"http://127.0.0.1:{free_port()}"
    with open(workdir / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address={url.removeprefix('http://')}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_ready(url, process)
        yield url
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def traffic(reward_app, prometheus, tmp_path_factory) -> float:
    """Scores on every reward (with one bad image each) and a short training run.

    Returns when the traffic started (unix seconds), the start of the window to query."""
    started = time.time()
    images = [np.full((32, 32, 3), v, np.uint8) for v in (0, 90, 180)] + [b"not an image"]
    prompts = ["a photo of a cat"] * len(images)
    rewards = [d["reward"] for d in REWARD_DEPLOYMENTS]
    with RewardClient.in_cluster(reward_app.app_name) as client:
        for _ in range(3):
            matrix = client.score(images, prompts, rewards)
    assert np.isnan(matrix.scores[:, -1]).all()  # the bad image is an error, not a score
    run_dir = tmp_path_factory.mktemp("run")
    records = fit(run_dir, "training.epochs=2", "logging.prometheus=true")
    assert [r["step"] for r in records] == [0, 1]
    return started


def _names_with_data(url: str, since: float) -> set[str]:
    response = httpx.get(f"{url}/api/v1/label/__name__/values", params={"start": since})
    response.raise_for_status()
    return set(response.json()["data"])


def _dashboard_metrics() -> dict[str, set[str]]:
    return {name: dash.all_metric_names(dash.load(name)) for name in dash.DASHBOARD_FILES}


@pytest.fixture(scope="module")
def scraped(prometheus, traffic) -> set[str]:
    """Waits (bounded) until every dashboard metric has data; the metric names with data."""
    wanted = set().union(*_dashboard_metrics().values())
    deadline, found = time.monotonic() + DATA_TIMEOUT_S, set()
    while time.monotonic() < deadline:
        found = _names_with_data(prometheus, traffic)
        if wanted <= found:
            break
        time.sleep(1.0)
    return found


def test_every_dashboard_metric_has_data(prometheus, traffic, scraped):
    missing = {board: sorted(names - scraped) for board, names in _dashboard_metrics().items()}
    assert not any(missing.values()), f"metrics without data in Prometheus: {missing}"
    # the labels the dashboards select on are there too
    for metric, label, value in (
        ("ray_reward_errors_total", "kind", "invalid_input"),
        ("ray_apex_weights", "objective", REWARDS[0]),
        ("ray_serve_deployment_replica_healthy", "deployment", "aesthetic"),
    ):
        series = httpx.get(
            f"{prometheus}/api/v1/series",
            params={"match[]": f'{metric}{{{label}="{value}"}}', "start": traffic},
        ).json()["data"]
        assert series, f"no {metric} series with {label}={value!r}"


@pytest.mark.parametrize("board", sorted(dash.DASHBOARD_FILES))
def test_every_panel_query_is_valid_and_returns_data(prometheus, traffic, scraped, board):
    end = time.time()
    empty, errors = [], []
    for title, expr in dash.exprs(dash.load(board)):
        query = dash.substitute(expr, VARIABLES)
        instant = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}).json()
        if instant["status"] != "success":
            errors.append(f"{title}: {query}: {instant.get('error')}")
            continue
        ranged = httpx.get(
            f"{prometheus}/api/v1/query_range",
            params={"query": query, "start": traffic, "end": end, "step": "1s"},
        ).json()
        if ranged["status"] != "success":
            errors.append(f"{title}: {query}: {ranged.get('error')}")
        elif not ranged["data"]["result"]:
            empty.append(f"{title}: {query}")
    assert not errors, "Prometheus rejected:\n" + "\n".join(errors)
    assert not empty, "no data over the test window:\n" + "\n".join(empty)


def test_monitor_script_starts_and_stops_prometheus(ray_cluster):
    _binary("prometheus")
    port, metrics_port = free_port(), os.environ["APEX_TEST_METRICS_PORT"]
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "deploy" / "monitor.py"),
            f"--metrics-port={metrics_port}",
            f"--prometheus-port={port}",
            "--no-grafana",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        deadline, targets = time.monotonic() + 20, []
        while time.monotonic() < deadline and not targets:
            data = httpx.get(f"{url}/api/v1/targets", timeout=5).json()["data"]
            targets = [t["scrapeUrl"] for t in data["activeTargets"]]
            time.sleep(0.5)
        assert targets == [f"http://127.0.0.1:{metrics_port}/metrics"]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert process.returncode == 0, output
    assert f"Prometheus  {url}" in output and "stopped" in output
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/-/ready", timeout=2)
