"""Running a multi-node fault scenario (``ray.cluster_utils.Cluster``) as its own process.

A scenario module calls :func:`run_main` under ``__main__``; its test calls
:func:`run_scenario`, which runs it once more only when the cluster itself could not be
built (a raylet that missed Ray's fixed 30 s start window on a loaded machine), never after a
fault has happened.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

STARTUP_FAILED = 75  # EX_TEMPFAIL: a raylet missed Ray's fixed 30 s start window (load)
ROOT = Path(__file__).resolve().parents[2]


def run_main(main: Callable[[str], object]) -> None:
    """``main(sys.argv[1])``; a cluster that timed out during start-up exits STARTUP_FAILED."""
    try:
        main(sys.argv[1])
    except Exception as exc:
        if "timed out during startup" in str(exc):
            print(f"cluster start failed: {exc}", file=sys.stderr)
            sys.exit(STARTUP_FAILED)
        raise


def run_scenario(module: str, out: Path, env: dict, timeout_s: float) -> None:
    """Run ``python -m module out`` (twice at most, see above); fails the test on an error."""
    for _attempt in range(2):  # a second try only if the cluster could not be built
        done = subprocess.run(
            [sys.executable, "-m", module, str(out)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if done.returncode != STARTUP_FAILED:
            break
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
