"""Read the shipped Grafana dashboards: panels, their PromQL, the metric names they use.

Shared by the static checks (tests/unit/test_dashboards.py) and the live check against a
real Prometheus (tests/integration/test_prometheus.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
DASHBOARD_FILES = {name: DASHBOARDS / f"{name}.json" for name in ("rewards", "training")}

# A metric name in PromQL: an identifier starting with ray_ followed by a selector, a range,
# a closing parenthesis, a comma, white space or the end. Ours are all exported through Ray.
_METRIC = re.compile(r"\b(ray_[A-Za-z0-9_:]+)(?=[{\[), ]|$)")
_LABEL_VALUES = re.compile(r"label_values\(\s*(ray_[A-Za-z0-9_:]+)")

# Concrete stand-ins for Grafana's variables, so an expression can be sent to Prometheus.
GRAFANA_VARIABLES = {
    "${datasource}": "prometheus",
    "$__rate_interval": "30s",
    "$__interval": "5s",
    "$__range": "5m",
}


def load(name: str) -> dict:
    """One dashboard as parsed JSON."""
    return json.loads(DASHBOARD_FILES[name].read_text())


def panels(dashboard: dict) -> Iterator[dict]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def exprs(dashboard: dict) -> list[tuple[str, str]]:
    """``(panel title, expr)`` of every target."""
    return [
        (panel["title"], target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def variable_queries(dashboard: dict) -> list[str]:
    """The ``label_values(...)`` queries of the query variables."""
    found = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        found.append(query["query"] if isinstance(query, dict) else query)
    return found


def metric_names(expr: str) -> set[str]:
    """The ``ray_*`` metric names an expression (or a ``label_values`` query) reads."""
    return set(_METRIC.findall(expr)) | set(_LABEL_VALUES.findall(expr))


def all_metric_names(dashboard: dict) -> set[str]:
    """Every metric a dashboard reads, in panels and in variable queries."""
    names: set[str] = set()
    for _, expr in exprs(dashboard):
        names |= metric_names(expr)
    for query in variable_queries(dashboard):
        names |= metric_names(query)
    return names


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace Grafana variables (``$name``, ``${name}``) with concrete values."""
    for key, value in {**GRAFANA_VARIABLES, **values}.items():
        if key.startswith("$"):
            expr = expr.replace(key, value)
        else:
            expr = expr.replace("${" + key + "}", value).replace("$" + key, value)
    if "$" in expr:
        raise ValueError(f"unsubstituted variable in {expr!r}")
    return expr
