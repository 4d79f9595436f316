"""The steps that need pip and the network: resolve, download, unpack, strip, archive.

Each step is its own function so that the tests of the selection logic (``resolve.py``)
never reach pip; ``__main__`` chains them. pip runs as ``python -m pip`` of the interpreter
that runs this module, told the target's Python, ABI and platform tags, and takes wheels
only (``--only-binary=:all:``): nothing is compiled for the wrong machine.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

from deploy.wheelhouse.resolve import Target, WheelhouseError, never_include

logger = logging.getLogger(__name__)

# Not needed by the trainer, the rewards or the GPU check, and large: Ray's Java jars
# (ray_dist.jar), RLlib, Ray's C++ API (headers and libray_api.so), console scripts (their
# shebangs name the build machine's Python) and the test folders some wheels ship.
STRIP = ("ray/jars", "ray/rllib", "ray/cpp", "bin")
STRIP_GLOBS = ("*/tests", "*/test")
MANIFEST = "wheelhouse.json"


def target_options(target: Target) -> list[str]:
    """pip's options for a foreign interpreter and platform, wheels only."""
    opts = ["--only-binary=:all:", "--python-version", target.python]
    opts += ["--implementation", "cp", "--abi", target.abi]  # abi3 and none follow from it
    for tag in target.platform_tags():
        opts += ["--platform", tag]
    return opts


def _pip(args: list[str], what: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    logger.info("%s: %s", what, " ".join(cmd[:8]) + " ...")
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        lines = [ln for ln in done.stdout.splitlines() if not ln.startswith(_NOISE)]
        tail = "\n".join(lines[-20:])
        raise WheelhouseError(f"pip failed to {what} (exit {done.returncode}):\n{tail}")


# progress lines, and the warnings of an index folder that does not list a package
_NOISE = ("WARNING: Location", "Collecting ", "  Using cached ", "  Downloading ", "  Obtaining ")


def resolve(
    requirements: Iterable[str], constraints: Iterable[str], target: Target, work: Path
) -> dict:
    """Resolve ``requirements`` for ``target`` (no install) and return pip's JSON report.

    ``constraints`` are the image's acceptable pins. When they cannot all hold together (an
    image package too old for something the archive brings), the resolution is repeated with
    only the pins of the GPU stack (torch and friends), then with none.
    """
    constraints = list(constraints)
    gpu_stack = [c for c in constraints if never_include(c.split("==")[0])]
    attempts = [("the image's pins", constraints)]
    if gpu_stack != constraints:
        attempts.append(("only the GPU stack's pins", gpu_stack))
    if gpu_stack:
        attempts.append(("no pins", []))
    report_path = work / "report.json"
    last: WheelhouseError | None = None
    for label, pins in attempts:
        cfile = work / "constraints.txt"
        cfile.write_text("".join(f"{c}\n" for c in pins))
        with tempfile.TemporaryDirectory() as scratch:
            try:
                _pip(
                    [
                        "install", "--dry-run", "--ignore-installed",
                        "--report", str(report_path), "--target", scratch,
                        "--constraint", str(cfile), *target_options(target), *requirements,
                    ],
                    f"resolve with {label}",
                )  # fmt: skip
            except WheelhouseError as exc:
                logger.warning("%s", exc)
                last = exc
                continue
        logger.info("resolved with %s", label)
        return json.loads(report_path.read_text())
    raise WheelhouseError(f"no resolution for {target.python}/{target.platform}: {last}")


def download(packages: Mapping[str, str], target: Target, wheels: Path) -> list[Path]:
    """Download exactly ``packages`` (name -> version) as wheels for ``target``, no deps."""
    wheels.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={version}" for name, version in sorted(packages.items())]
    _pip(["download", "--no-deps", "--dest", str(wheels), *target_options(target), *pins],
         f"download {len(pins)} wheels")  # fmt: skip
    wanted = {_wheel_key(name, version) for name, version in packages.items()}
    found = [
        w for w in sorted(wheels.glob("*.whl")) if _wheel_key(*w.name.split("-")[:2]) in wanted
    ]
    if len(found) != len(wanted):
        raise WheelhouseError(f"expected {len(wanted)} wheels in {wheels}, found {len(found)}")
    return found


def _wheel_key(name: str, version: str) -> tuple[str, str]:
    return canonicalize_name(name), str(Version(version))


def unpack(wheels: list[Path], target: Target, site: Path) -> None:
    """Install the wheels into a bare site tree ``site`` (no bytecode)."""
    if site.exists():
        shutil.rmtree(site)
    _pip(["install", "--no-deps", "--no-index", "--no-compile", "--target", str(site),
          *target_options(target), *map(str, wheels)], "unpack the wheels")  # fmt: skip


def strip(site: Path) -> dict[str, int]:
    """Remove ``STRIP`` and ``STRIP_GLOBS`` from the site tree; bytes freed per removed path."""
    freed: dict[str, int] = {}
    paths = [site / p for p in STRIP] + [p for g in STRIP_GLOBS for p in site.glob(g)]
    for path in paths:
        if path.is_dir():
            freed[str(path.relative_to(site))] = tree_size(path)
            shutil.rmtree(path)
    return freed


def tree_size(path: Path) -> int:
    """Bytes in the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def archive(root: Path, members: list[str], out: Path, manifest: dict, compress: bool) -> Path:
    """Write ``out``: the manifest first, then ``members`` of ``root``; xz (preset 9) if asked.

    With an ``xz`` command on the PATH it compresses on every core (``-T0``); Python's own
    lzma, the fallback, uses one (34 min for the 571 MB site tree on a loaded 2-core machine).
    """
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    names = [MANIFEST, *members]
    xz = shutil.which("xz") if compress else None
    if xz:
        with open(tmp, "wb") as sink:
            proc = subprocess.Popen([xz, "-9", "-T0", "-c"], stdin=subprocess.PIPE, stdout=sink)
            with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
                _add(tar, root, names)
            proc.stdin.close()
            if proc.wait() != 0:
                raise WheelhouseError(f"xz failed (exit {proc.returncode}) writing {tmp}")
    else:
        kwargs = {"preset": 9} if compress else {}
        with tarfile.open(tmp, "w:xz" if compress else "w", **kwargs) as tar:
            _add(tar, root, names)
    tmp.replace(out)
    return out


def _add(tar: tarfile.TarFile, root: Path, names: list[str]) -> None:
    for name in names:
        tar.add(root / name, arcname=name)
