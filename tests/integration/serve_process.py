"""``python -m services.serve`` as its own process (its own Ray), as ``make serve`` starts it.

For tests that need what the shared session cluster cannot give: Serve's proxies are set
once per cluster (bind address, TLS), and a socket census must see one app's processes only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServeProcess:
    """A running ``services.serve`` and what it printed until it was up."""

    proc: subprocess.Popen
    banner: str


def wait_for_line(proc: subprocess.Popen, needle: str, timeout_s: float) -> str:
    """Everything ``proc`` printed up to the line containing ``needle``."""
    lines, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        if needle in line:
            return "".join(lines)
    raise AssertionError(f"no {needle!r} within {timeout_s} s:\n{''.join(lines)}")


@contextlib.contextmanager
def serve_process(
    args: list[str], env: dict[str, str], timeout_s: float = 240
) -> Iterator[ServeProcess]:
    """Start ``python -m services.serve ARGS``; yield once it is up; SIGTERM it at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.serve", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield ServeProcess(proc, wait_for_line(proc, "Ctrl-C (or SIGTERM)", timeout_s))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
