"""CLI of ``make wheelhouse``: ``python -m deploy.wheelhouse --exclude-from FREEZE [...]``.

Resolve the project's runtime requirements (pyproject.toml) for the target, subtract what
the image's ``pip freeze`` has at an acceptable version, download the rest as wheels and
pack them. Exit status 2 for a bad option or input (the message names it), 1 when pip fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from packaging.requirements import Requirement

from deploy.wheelhouse import pack
from deploy.wheelhouse.resolve import (
    Target,
    WheelhouseError,
    constraints_for,
    parse_freeze,
    requirement_specifiers,
    resolved_from_report,
    subtract,
)

ROOT = Path(__file__).resolve().parents[2]
FORMATS = ("site", "wheels")
logger = logging.getLogger("wheelhouse")


def project_requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """``[project].dependencies`` of ``pyproject``, plus the named optional-dependency groups."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from pip._vendor import tomli as tomllib

    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project["dependencies"])
    groups = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in groups:
            raise WheelhouseError(
                f"extra {extra!r}: not an optional-dependency group of {pyproject} "
                f"(it has: {', '.join(sorted(groups))})"
            )
        reqs += groups[extra]
    return reqs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options (the Makefile passes PYVER, PLATFORM, EXCLUDE_FROM, FORMAT, OUT)."""
    p = argparse.ArgumentParser(prog="python -m deploy.wheelhouse", description=__doc__)
    p.add_argument("--python-version", default="3.12", help="target Python, MAJOR.MINOR")
    p.add_argument("--platform", default="manylinux_2_28_x86_64", help="target wheel platform")
    p.add_argument("--exclude-from", type=Path, help="pip freeze of the target image")
    p.add_argument("--extras", default="", help="optional-dependency groups too, comma-separated")
    p.add_argument("--format", default="site", help="site (xz site tree, default) or wheels")
    p.add_argument("--out", type=Path, help="archive path (default under results/wheelhouse/)")
    p.add_argument("--work", type=Path, help="download folder, reused by a rerun")
    p.add_argument("--dry-run", action="store_true", help="resolve and print the plan only")
    return p.parse_args(argv)


def check_options(args: argparse.Namespace) -> tuple[Target, dict[str, str], list[str]]:
    """Validate before any download: target, format, extras, freeze file; the requirements."""
    target = Target(args.python_version, args.platform)
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    requirements = project_requirements(ROOT / "pyproject.toml", extras)
    if args.format not in FORMATS:
        raise WheelhouseError(f"format {args.format!r}: expected one of {', '.join(FORMATS)}")
    freeze: dict[str, str] = {}
    if args.exclude_from is not None:
        path = args.exclude_from
        if not path.is_file():
            raise WheelhouseError(
                f"EXCLUDE_FROM file {str(path)!r}: no such file (give the target image's "
                "`pip freeze` output, e.g. deploy/wheelhouse/gpu-image-freeze.example.txt)"
            )
        freeze = parse_freeze(path.read_text(), str(path))
    return target, freeze, requirements


def build(
    args: argparse.Namespace, target: Target, freeze: dict[str, str], req_lines: list[str]
) -> dict:
    """Resolve, subtract, download and pack; returns the manifest written into the archive."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    tag = f"py{target.python.replace('.', '')}-{target.platform}"
    work = args.work or ROOT / "results" / "wheelhouse" / f"work-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    roots = [Requirement(r) for r in req_lines]

    report = pack.resolve(req_lines, constraints_for(freeze, roots), target, work)
    resolved = resolved_from_report(report)
    plan = subtract(resolved, requirement_specifiers(roots, resolved, target), freeze)
    timings["resolve_s"] = time.perf_counter() - started
    manifest = {
        "format": args.format,
        "python": target.python,
        "platform": target.platform,
        "exclude_from": str(args.exclude_from) if args.exclude_from else None,
        "requirements": req_lines,
        "packages": plan.include,
        "replaces_image_versions": plan.replaced,
        "in_image": plan.in_image,
        "never_included": plan.never,
    }
    if args.dry_run:
        return manifest

    mark = time.perf_counter()
    wheels = pack.download(plan.include, target, work / "wheels")
    timings["download_s"] = time.perf_counter() - mark
    manifest["wheel_bytes"] = sum(w.stat().st_size for w in wheels)
    out = args.out or ROOT / "results" / "wheelhouse" / (
        f"apex-wheelhouse-{tag}" + (".tar.xz" if args.format == "site" else ".tar")
    )
    mark = time.perf_counter()
    stage = work / "stage"
    stage.mkdir(exist_ok=True)
    if args.format == "site":
        pack.unpack(wheels, target, stage / "site")
        manifest["stripped_bytes"] = pack.strip(stage / "site")
        manifest["site_bytes"] = pack.tree_size(stage / "site")
        pack.archive(stage, ["site"], out, manifest, compress=True)
    else:
        shutil.rmtree(stage / "wheels", ignore_errors=True)  # no wheels of an earlier build
        (stage / "wheels").mkdir()
        for w in wheels:
            shutil.copy2(w, stage / "wheels" / w.name)
        pack.archive(stage, ["wheels"], out, manifest, compress=False)
    timings["pack_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started
    manifest.update(archive=str(out), archive_bytes=out.stat().st_size, timings=timings)
    return manifest


def summary(manifest: dict) -> str:
    """The plan and the figures, for the terminal."""
    mb = 1e6
    lines = [f"{len(manifest['packages'])} packages to pack for "
             f"Python {manifest['python']} / {manifest['platform']}:"]  # fmt: skip
    lines += [f"  {n}=={v}" for n, v in sorted(manifest["packages"].items())]
    for name, old in sorted(manifest["replaces_image_versions"].items()):
        lines.append(f"  (replaces the image's {name} {old})")
    lines.append(f"left to the image: {len(manifest['in_image'])} packages at its own versions")
    lines.append(f"never packed (GPU stack): {', '.join(sorted(manifest['never_included']))}")
    if "archive" in manifest:
        for path, size in sorted(manifest.get("stripped_bytes", {}).items()):
            lines.append(f"stripped {path}: {size / mb:.1f} MB")
        if "site_bytes" in manifest:
            lines.append(f"site tree: {manifest['site_bytes'] / mb:.0f} MB")
        t = manifest["timings"]
        lines.append(
            f"wheels {manifest['wheel_bytes'] / mb:.0f} MB -> {manifest['archive']}: "
            f"{manifest['archive_bytes'] / mb:.1f} MB "
            f"(resolve {t['resolve_s']:.0f} s, download {t['download_s']:.0f} s, "
            f"pack {t['pack_s']:.0f} s, total {t['total_s']:.0f} s)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; 2 for a bad option or input, 1 when pip fails, 0 when the archive is written."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        target, freeze, requirements = check_options(args)
    except WheelhouseError as exc:
        print(f"make wheelhouse: {exc}", file=sys.stderr)
        return 2
    if not freeze:
        logger.warning("no EXCLUDE_FROM: packing every runtime requirement but the GPU stack")
    try:
        manifest = build(args, target, freeze, requirements)
    except WheelhouseError as exc:
        print(f"make wheelhouse: {exc}", file=sys.stderr)
        return 1
    print(summary(manifest))
    if args.dry_run:
        print(json.dumps(manifest["packages"], indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
