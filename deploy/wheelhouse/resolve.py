"""What the wheelhouse holds: the resolved packages less what the target image already has.

Pure functions, no pip and no network, so the tests run them on hand-made inputs:

- ``Target``: the target Python and platform tag, checked, with the marker environment that
  requirement markers are evaluated in and the ``--platform`` tags pip is given.
- ``parse_freeze``: the ``pip freeze`` of the image (``name==version`` lines) as a mapping.
- ``constraints_for``: the image's pins that the resolver should prefer (so that it picks the
  versions the image has wherever they are acceptable).
- ``subtract``: from a resolution (pip's ``--report``), the packages to pack: those the image
  lacks or has at a version that one of the requirements on it rejects; never torch, triton,
  the CUDA wheels (``nvidia-*``, ``cuda-*``): the GPU image brings those.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

# The GPU image's own stack: a copy in front of it on PYTHONPATH would replace its CUDA build.
NEVER_INCLUDE = ("torch", "torchvision", "torchaudio", "triton", "pytorch-triton")
NEVER_INCLUDE_PREFIXES = ("nvidia-", "cuda-")

_PLATFORM = re.compile(
    r"^(?:manylinux_(?P<major>\d+)_(?P<minor>\d+)|(?P<legacy>manylinux(?:1|2010|2014)))"
    r"_(?P<arch>x86_64|aarch64|ppc64le|s390x|i686|armv7l)$"
)
# manylinux1/2010/2014 are the old names of glibc 2.5/2.12/2.17
_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_PYVER = re.compile(r"^3\.(\d+)$")


class WheelhouseError(ValueError):
    """A bad option or input, with a message that names it (the CLI exits 2 with it)."""


@dataclass(frozen=True)
class Target:
    """The interpreter and platform the archive is for: ``Target("3.12", "manylinux_2_28_x86_64")``.

    The platform tag is the one the target's own wheels carry (its torch wheel's file name).
    """

    python: str
    platform: str
    glibc: tuple[int, int] = field(init=False)
    arch: str = field(init=False)

    def __post_init__(self) -> None:
        if not _PYVER.match(self.python):
            raise WheelhouseError(
                f"python version {self.python!r}: expected MAJOR.MINOR such as 3.12 (PYVER=3.12)"
            )
        m = _PLATFORM.match(self.platform)
        if not m:
            raise WheelhouseError(
                f"platform {self.platform!r}: expected a manylinux tag such as "
                "manylinux_2_28_x86_64 (manylinux_<glibc major>_<glibc minor>_<arch>, or "
                "manylinux2014_x86_64); see the wheel filenames of the target's torch"
            )
        glibc = _LEGACY[m["legacy"]] if m["legacy"] else (int(m["major"]), int(m["minor"]))
        object.__setattr__(self, "glibc", glibc)
        object.__setattr__(self, "arch", m["arch"])

    @property
    def abi(self) -> str:
        """The CPython ABI tag, e.g. ``cp312``."""
        return "cp" + self.python.replace(".", "")

    def platform_tags(self) -> list[str]:
        """Every tag a wheel for this target may carry, newest glibc first.

        pip's ``--platform manylinux_2_28_x86_64`` accepts only that exact tag, while most
        wheels (ray, grpcio) are built for an older glibc, so pip is given them all.
        """
        major, minor = self.glibc
        tags = [f"manylinux_{major}_{m}_{self.arch}" for m in range(minor, 4, -1)]
        tags += [
            f"{name}_{self.arch}"
            for name, version in sorted(_LEGACY.items(), key=lambda kv: kv[1], reverse=True)
            if version <= self.glibc
        ]
        return tags

    def marker_environment(self, extra: str = "") -> dict[str, str]:
        """The PEP 508 environment of the target (CPython on Linux), for evaluating markers."""
        full = self.python + ".0"
        return {
            "implementation_name": "cpython",
            "implementation_version": full,
            "os_name": "posix",
            "platform_machine": self.arch,
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_full_version": full,
            "python_version": self.python,
            "sys_platform": "linux",
            "extra": extra,
        }


def never_include(name: str) -> bool:
    """True for the GPU image's own stack (torch, triton, the CUDA wheels), whatever its version."""
    name = canonicalize_name(name)
    return name in NEVER_INCLUDE or name.startswith(NEVER_INCLUDE_PREFIXES)


def parse_freeze(text: str, source: str = "freeze") -> dict[str, str]:
    """``pip freeze`` output as ``{normalized name: version}``.

    Comments, blank lines, options (``-e``, ``--index-url``) and VCS lines are skipped; a
    ``name @ URL`` line counts as present, with the version read from a wheel or sdist file
    name in the URL when it has one, else ``""`` (present, version unknown: never assumed to
    satisfy a requirement). A line that is none of these raises ``WheelhouseError``.
    """
    pins: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise WheelhouseError(
                f"{source}:{number}: not a pip freeze line: {raw!r} ({exc})"
            ) from None
        name = canonicalize_name(req.name)
        if req.url:
            pins[name] = _version_from_url(req.url, name)
            continue
        exact = [s.version for s in req.specifier if s.operator in ("==", "===")]
        if len(exact) != 1 or "*" in exact[0]:
            raise WheelhouseError(
                f"{source}:{number}: expected name==version (pip freeze), got {raw!r}"
            )
        pins[name] = exact[0]
    return pins


def _version_from_url(url: str, name: str) -> str:
    filename = unquote(url.rstrip("/").rsplit("/", 1)[-1])  # %2B in "2.11.0%2Bcu130"
    m = re.match(r"^([^-]+)-([^-]+?)(?:-.*\.whl|\.tar\.gz|\.zip)$", filename)
    if m and canonicalize_name(m[1]) == name:
        try:
            return str(Version(m[2]))
        except InvalidVersion:
            pass
    return ""


def satisfies(version: str, specifier: SpecifierSet) -> bool:
    """Does an installed ``version`` meet ``specifier``? Unknown or invalid versions do not.

    Pre-releases and local labels count (``2.11.0a0+nv`` meets ``>=2.4``), as pip counts an
    installed pre-release.
    """
    if not version:
        return False
    try:
        return specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def constraints_for(freeze: Mapping[str, str], requirements: Iterable[Requirement]) -> list[str]:
    """The image's pins (``name==public version``) that the direct requirements accept.

    Given to the resolver as constraints so that it settles on what the image has; a pin that
    a direct requirement rejects (the image's grpcio 1.84 against ``grpcio>=1.85.1``) is left
    out, so the resolver picks a newer one, which the archive then carries.
    """
    direct: dict[str, SpecifierSet] = {}
    for req in requirements:
        name = canonicalize_name(req.name)
        direct[name] = direct.get(name, SpecifierSet()) & req.specifier
    out = []
    for name, version in sorted(freeze.items()):
        try:
            public = Version(version).public
        except InvalidVersion:
            continue
        if satisfies(version, direct.get(name, SpecifierSet())):
            out.append(f"{name}=={public}")
    return out


@dataclass(frozen=True)
class Resolved:
    """One package of a resolution: name, version and its ``Requires-Dist`` lines."""

    name: str
    version: str
    requires: tuple[str, ...] = ()


def resolved_from_report(report: Mapping) -> list[Resolved]:
    """The packages of a ``pip install --dry-run --report`` JSON document."""
    return [
        Resolved(
            canonicalize_name(item["metadata"]["name"]),
            item["metadata"]["version"],
            tuple(item["metadata"].get("requires_dist") or ()),
        )
        for item in report["install"]
    ]


def requirement_specifiers(
    roots: Iterable[Requirement], resolved: Iterable[Resolved], target: Target
) -> dict[str, SpecifierSet]:
    """Every specifier that applies to each package on the target, from roots and dependencies.

    Extras are followed (``ray[serve]`` makes ``uvicorn[standard]`` apply, which makes
    ``uvloop`` apply); markers are evaluated for ``target``.
    """
    packages = {r.name: r for r in resolved}
    specs: dict[str, SpecifierSet] = {}
    extras: dict[str, set[str]] = {}
    seen: set[tuple[str, str]] = set()

    def add(req: Requirement, for_extras: set[str]) -> bool:
        envs = [target.marker_environment(e) for e in ({""} | for_extras)]
        if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
            return False
        name = canonicalize_name(req.name)
        specs[name] = specs.get(name, SpecifierSet()) & req.specifier
        extras.setdefault(name, set()).update(req.extras)
        return True

    for req in roots:
        add(req, set())
    changed = True
    while changed:  # a fixed point: a new extra can make more requirements apply
        changed = False
        for name in list(extras):
            for extra in {""} | extras[name]:
                if (name, extra) in seen or name not in packages:
                    continue
                seen.add((name, extra))
                changed = True
                for line in packages[name].requires:
                    add(Requirement(line), {extra} if extra else set())
    return specs


@dataclass
class Plan:
    """The outcome of ``subtract``: what to pack, and why each other package is left out."""

    include: dict[str, str] = field(default_factory=dict)  # name -> version to pack
    in_image: dict[str, str] = field(default_factory=dict)  # name -> the image's version
    never: dict[str, str] = field(default_factory=dict)  # name -> resolved version, not packed
    replaced: dict[str, str] = field(default_factory=dict)  # name -> image version it overrides


def subtract(
    resolved: Iterable[Resolved],
    specifiers: Mapping[str, SpecifierSet],
    freeze: Mapping[str, str],
) -> Plan:
    """Split a resolution into what to pack and what the image already provides.

    A package is packed when the image lacks it, or has it at a version that a specifier on it
    (``specifiers``, from ``requirement_specifiers``) rejects; never when ``never_include``.
    """
    plan = Plan()
    for pkg in resolved:
        name = canonicalize_name(pkg.name)
        if never_include(name):
            plan.never[name] = pkg.version
        elif name in freeze and satisfies(freeze[name], specifiers.get(name, SpecifierSet())):
            plan.in_image[name] = freeze[name]
        else:
            plan.include[name] = pkg.version
            if name in freeze:
                plan.replaced[name] = freeze[name] or "unknown version"
    return plan
