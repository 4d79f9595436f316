"""The shipped Grafana dashboards and provisioning are well formed and cover what we watch.

Static checks only; tests/integration/test_prometheus.py runs every expression against a real
Prometheus scraping a real cluster.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import yaml

from tests import dashboards as dash
from trainer.coordinator.metrics import PER_OBJECTIVE, SCALARS

GRAFANA = dash.ROOT / "deploy" / "grafana"


@pytest.fixture(params=sorted(dash.DASHBOARD_FILES), scope="module")
def dashboard(request) -> dict:
    return dash.load(request.param)


def _covered(dashboard: dict) -> set[str]:
    return dash.all_metric_names(dashboard)


def test_dashboard_structure(dashboard):
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"].startswith("apex-") and dashboard["title"].startswith("APEX")
    ids = [p["id"] for p in dash.panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dash.panels(dashboard):
        exprs = [t.get("expr") for t in panel.get("targets", [])]
        assert exprs and all(exprs), f"panel {panel['title']!r} has a target without an expr"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]


def test_template_variables(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    used = {m for _, e in dash.exprs(dashboard) for m in re.findall(r"\$(\w+)", e)}
    builtin = {"__rate_interval", "__interval", "__range"}
    assert used - builtin <= set(variables), f"undefined variables: {used - builtin}"
    for _, expr in dash.exprs(dashboard):
        dash.substitute(expr, {"reward": "aesthetic", "objective": "aesthetic"})


def test_expressions_are_balanced_and_name_ray_metrics(dashboard):
    for title, expr in dash.exprs(dashboard):
        assert expr.count("(") == expr.count(")"), title
        assert expr.count("{") == expr.count("}"), title
        assert dash.metric_names(expr), f"{title!r} reads no ray_* metric"


def test_rewards_dashboard_covers_the_reward_services():
    board = dash.load("rewards")
    names = _covered(board)
    exprs = " ".join(e for _, e in dash.exprs(board))
    assert "ray_reward_request_latency_seconds_count" in names  # requests/s
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le, reward) (rate(" in exprs
    assert "ray_reward_request_latency_seconds_bucket" in names
    assert "ray_reward_batch_size_bucket" in names and "ray_reward_batch_size_count" in names
    assert "ray_reward_queue_length" in names
    assert "ray_serve_deployment_replica_healthy" in names  # replicas
    assert "ray_reward_errors_total" in names and "by (reward, kind)" in exprs
    assert "ray_reward_images_scored_total" in names


def test_training_dashboard_covers_the_balancer_and_the_trainer():
    board = dash.load("training")
    names = _covered(board)
    for key in ("learning_potential", "progress_need", "conflict_penalty"):  # P3 terms
        assert f"ray_apex_{key}" in names
    for key in ("weights", "reward_mean", "reward_std"):
        assert f"ray_apex_{key}" in names
    assert "ray_apex_conflict_correlation" in names
    for key in ("advantage_mean", "advantage_std", "advantage_clip_fraction", "kl"):
        assert f"ray_apex_{key}" in names
    assert "ray_apex_clip_fraction" in names
    split = {"time_sampling_s", "time_scoring_s", "time_coordinator_s", "time_update_s"}
    assert {f"ray_apex_{k}" for k in split} <= names
    assert "ray_apex_time_scoring_total_s" in names
    matrix = [p for p in dash.panels(board) if p["type"] in ("table", "heatmap")]
    assert any("ray_apex_conflict_correlation" in t["expr"] for p in matrix for t in p["targets"])


def test_training_dashboard_reads_only_exported_gauges():
    exported = {f"ray_apex_{k}" for k in (*PER_OBJECTIVE, *SCALARS, "step")}
    exported.add("ray_apex_conflict_correlation")
    apex = {n for n in _covered(dash.load("training")) if n.startswith("ray_apex_")}
    assert apex <= exported, f"not exported by TrainingGauges: {apex - exported}"


def test_grafana_provisioning_points_at_the_dashboards():
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").open())
    (ds,) = source["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "${APEX_PROMETHEUS_URL}"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "apex.yml").open())
    (prov,) = provider["providers"]
    assert prov["type"] == "file" and prov["options"]["path"] == "${APEX_GRAFANA_DASHBOARDS}"
    assert sorted(p.name for p in dash.DASHBOARDS.glob("*.json")) == [
        "rewards.json",
        "training.json",
    ]


def _monitor():
    """deploy/monitor.py is a script, not a package module: load it from its path."""
    if "apex_monitor" not in sys.modules:
        path = dash.ROOT / "deploy" / "monitor.py"
        spec = importlib.util.spec_from_file_location("apex_monitor", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["apex_monitor"] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
    return sys.modules["apex_monitor"]


def test_make_monitor_sets_every_variable_the_provisioning_reads(tmp_path):
    monitor = _monitor()
    argv, env = monitor.grafana_command(["grafana-server"], 3000, "http://127.0.0.1:9090", tmp_path)
    assert argv[0] == "grafana-server"
    wanted = set()
    for path in (GRAFANA / "provisioning").rglob("*.yml"):
        wanted |= set(re.findall(r"\$\{(\w+)\}", path.read_text()))
    assert wanted == {"APEX_PROMETHEUS_URL", "APEX_GRAFANA_DASHBOARDS"}
    assert all(env.get(name) for name in wanted)
    assert Path(env["APEX_GRAFANA_DASHBOARDS"]) == dash.DASHBOARDS
    assert Path(env["GF_PATHS_PROVISIONING"]).is_dir()
    assert env["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"


def test_make_monitor_scrapes_the_local_metrics_port(tmp_path):
    monitor = _monitor()
    assert monitor.prometheus_config(8080, tmp_path) == monitor.LOCAL_CONFIG
    local = yaml.safe_load(monitor.LOCAL_CONFIG.read_text())
    assert local["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:8080"]
    other = yaml.safe_load(monitor.prometheus_config(18080, tmp_path).read_text())
    assert other["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:18080"]
    argv = monitor.prometheus_command("prometheus", monitor.LOCAL_CONFIG, 9090, tmp_path)
    assert "--web.listen-address=127.0.0.1:9090" in argv
