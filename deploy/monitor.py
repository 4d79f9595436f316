"""``make monitor``: Prometheus (and Grafana, when installed) for a local APEX run.

Starts Prometheus from PATH with ``deploy/prometheus/prometheus-local.yml`` (Ray's metrics
export port of a local ``make train``/``make serve``, 127.0.0.1:8080) and a throw-away TSDB,
web UI on 127.0.0.1:9090. If a ``grafana-server`` (or ``grafana``) binary is on PATH, starts
it on 127.0.0.1:3000 with ``deploy/grafana/provisioning``, so the data source and both
dashboards are there at once. Prints the URLs, then waits for Ctrl-C and stops both.
Only loopback addresses; nothing is installed or downloaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
LOCAL_CONFIG = DEPLOY / "prometheus" / "prometheus-local.yml"
GRAFANA_PROVISIONING = DEPLOY / "grafana" / "provisioning"
GRAFANA_DASHBOARDS = DEPLOY / "grafana" / "dashboards"
DEFAULT_METRICS_PORT = 8080  # the target in prometheus-local.yml
HOST = "127.0.0.1"
GRAFANA_HOMES = ("/usr/share/grafana", "/usr/local/share/grafana", "/opt/grafana")


class MonitorError(RuntimeError):
    """A problem the user can fix; printed without a traceback."""


@dataclass
class Child:
    """A started server: its name, process and log file."""

    name: str
    process: subprocess.Popen
    log: Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of ``python deploy/monitor.py``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=DEFAULT_METRICS_PORT,
        help="Ray's metrics export port to scrape (default 8080, as make train/serve use)",
    )
    parser.add_argument("--prometheus-port", type=int, default=9090, help="default 9090")
    parser.add_argument("--grafana-port", type=int, default=3000, help="default 3000")
    parser.add_argument(
        "--prometheus", default=shutil.which("prometheus"), help="binary (default: from PATH)"
    )
    parser.add_argument(
        "--no-grafana", action="store_true", help="do not start Grafana even if installed"
    )
    return parser.parse_args(argv)


def prometheus_config(metrics_port: int, workdir: Path) -> Path:
    """The shipped local config, or a copy scraping another port."""
    if metrics_port == DEFAULT_METRICS_PORT:
        return LOCAL_CONFIG
    text = LOCAL_CONFIG.read_text()
    default_target = f"{HOST}:{DEFAULT_METRICS_PORT}"
    if default_target not in text:
        raise MonitorError(f"{LOCAL_CONFIG} no longer targets {default_target}")
    path = workdir / "prometheus.yml"
    path.write_text(text.replace(default_target, f"{HOST}:{metrics_port}"))
    return path


def prometheus_command(binary: str, config: Path, port: int, workdir: Path) -> list[str]:
    """Prometheus on loopback with a TSDB under ``workdir``."""
    return [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address={HOST}:{port}",
    ]


def find_grafana() -> list[str] | None:
    """``grafana-server``, or the newer single ``grafana`` binary's ``server`` command."""
    if path := shutil.which("grafana-server"):
        return [path]
    if path := shutil.which("grafana"):
        return [path, "server"]
    return None


def grafana_command(
    launcher: list[str], port: int, prometheus_url: str, workdir: Path
) -> tuple[list[str], dict[str, str]]:
    """Argv and environment of a Grafana that provisions the APEX data source and dashboards."""
    argv = list(launcher)
    home = os.environ.get("GRAFANA_HOME") or next(
        (h for h in GRAFANA_HOMES if Path(h, "conf", "defaults.ini").is_file()), None
    )
    if home:  # package installs keep conf/ and public/ away from the binary
        argv.append(f"--homepath={home}")
    data = workdir / "grafana"
    env = {
        **os.environ,
        "APEX_PROMETHEUS_URL": prometheus_url,
        "APEX_GRAFANA_DASHBOARDS": str(GRAFANA_DASHBOARDS),
        "GF_PATHS_PROVISIONING": str(GRAFANA_PROVISIONING),
        "GF_PATHS_DATA": str(data),
        "GF_PATHS_LOGS": str(data / "log"),
        "GF_PATHS_PLUGINS": str(data / "plugins"),
        "GF_SERVER_HTTP_ADDR": HOST,
        "GF_SERVER_HTTP_PORT": str(port),
        "GF_AUTH_ANONYMOUS_ENABLED": "true",  # loopback only: view without logging in
        "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
        "GF_ANALYTICS_REPORTING_ENABLED": "false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
        "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES": "false",
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": str(GRAFANA_DASHBOARDS / "training.json"),
    }
    return argv, env


def start(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> Child:
    """Start a server with its output in ``workdir/<name>.log``."""
    log = workdir / f"{name}.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            argv,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=workdir,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
        )
    return Child(name, process, log)


def _tail(child: Child, lines: int = 20) -> str:
    return "\n".join(child.log.read_text(errors="replace").splitlines()[-lines:])


def wait_ready(child: Child, url: str, timeout_s: float) -> None:
    """Poll ``url`` until it answers 200; fail with the log's tail if the server exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise MonitorError(
                f"{child.name} exited with {child.process.returncode}:\n{_tail(child)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise MonitorError(f"{child.name} not ready at {url} after {timeout_s:.0f} s:\n{_tail(child)}")


def metrics_reachable(port: int) -> bool:
    """Whether a Ray metrics agent answers on the local metrics port."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop(children: list[Child]) -> None:
    """Terminate the servers (newest first) and wait for them."""
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.terminate()
    for child in reversed(children):
        try:
            child.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, workdir: Path) -> None:
    """Start the servers, print where they are, block until Ctrl-C or a server exits."""
    if not args.prometheus:
        raise MonitorError(
            "prometheus is not on PATH; install it (Debian/Ubuntu: sudo apt-get install -y "
            "prometheus, which does not start a service here) or pass --prometheus BINARY"
        )
    children: list[Child] = []
    try:
        config = prometheus_config(args.metrics_port, workdir)
        prom_url = f"http://{HOST}:{args.prometheus_port}"
        argv = prometheus_command(args.prometheus, config, args.prometheus_port, workdir)
        children.append(start("prometheus", argv, workdir))
        wait_ready(children[-1], f"{prom_url}/-/ready", timeout_s=30)
        lines = [
            f"Prometheus  {prom_url}  (targets: {prom_url}/targets)",
            f"  scrapes   http://{HOST}:{args.metrics_port}/metrics every 2 s  (config {config})",
        ]
        launcher = None if args.no_grafana else find_grafana()
        if launcher:
            grafana_url = f"http://{HOST}:{args.grafana_port}"
            argv, env = grafana_command(launcher, args.grafana_port, prom_url, workdir)
            children.append(start("grafana", argv, workdir, env))
            wait_ready(children[-1], f"{grafana_url}/api/health", timeout_s=60)
            lines.append(f"Grafana     {grafana_url}/dashboards  (folder APEX; admin/admin)")
        else:
            lines.append(
                f"Grafana     not on PATH; import {GRAFANA_DASHBOARDS}/*.json into any Grafana "
                "with a Prometheus data source"
            )
        if not metrics_reachable(args.metrics_port):
            lines.append(
                f"Nothing answers on {HOST}:{args.metrics_port} yet: start `make train` or "
                "`make serve`; Prometheus picks it up within seconds."
            )
        lines.append(f"Logs and data in {workdir} (removed on exit). Ctrl-C stops.")
        print("\n".join(lines), flush=True)
        while all(child.process.poll() is None for child in children):
            time.sleep(0.5)
        dead = next(c for c in children if c.process.poll() is not None)
        raise MonitorError(f"{dead.name} exited with {dead.process.returncode}:\n{_tail(dead)}")
    finally:
        stop(children)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="apex-monitor-"))
    try:
        run(args, workdir)
    except KeyboardInterrupt:
        print("\nstopped", flush=True)
        return 0
    except MonitorError as exc:
        print(f"make monitor: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
