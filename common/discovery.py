"""How a trainer on this machine finds the reward services that ``make serve`` runs.

``make serve`` starts its own local Ray. Ray's ``address="auto"`` picks *some* running cluster
when several run (a test's, a benchmark's), so it cannot be trusted to find the right one.
Instead ``services.serve`` writes one small JSON file per Serve app while it runs: the Ray
address, the HTTP and gRPC URLs and its process id, and removes it when it stops. A trainer
with ``reward_service.deploy=false`` reads it; a file whose process is gone is stale.

The folder is ``$APEX_STATE_DIR`` or ``<temp dir>/apex-services``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["discovery_path", "read_discovery", "remove_discovery", "write_discovery"]


def discovery_path(app_name: str) -> Path:
    """Where the running app ``app_name`` announces itself on this machine."""
    root = os.environ.get("APEX_STATE_DIR") or Path(tempfile.gettempdir()) / "apex-services"
    return Path(root) / f"{app_name}.json"


def write_discovery(app_name: str, info: dict[str, Any]) -> Path:
    """Announce a running app (atomically); ``info`` gets this process's id added."""
    path = discovery_path(app_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**info, "pid": os.getpid()}))
    os.replace(tmp, path)
    return path


def read_discovery(app_name: str) -> dict[str, Any] | None:
    """The announcement of ``app_name`` if its process still runs, else None."""
    path = discovery_path(app_name)
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)  # signal 0: does the process exist?
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info


def remove_discovery(app_name: str) -> None:
    """Withdraw the announcement written by this process (another process's stays)."""
    path = discovery_path(app_name)
    try:
        if int(json.loads(path.read_text()).get("pid", -1)) == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass
