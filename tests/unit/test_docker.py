"""The Docker image, checked without an engine: docker/Dockerfile, /.dockerignore, make docker.

A small Dockerfile reader (line continuations, comments, stages, ARG scoping, ENV, COPY/ADD,
USER, WORKDIR, VOLUME, CMD/ENTRYPOINT) feeds checks that each return a list of problems, so
the same checks run on the real files and, in the negative tests, on broken variants of them.
Heredocs are not supported (the Dockerfile uses none).
"""

from __future__ import annotations

import importlib.util
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.metadata import version as installed_version
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
TARGETS = ("trainer", "rewards")  # the last stage, trainer, is the default target
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".bin", ".pt", ".ckpt")
# the one set of weights an image may carry: the project's own small model (8 MB, committed),
# which deploy/configs/local.yaml aligns; every other model comes at run time
SHIPPED_MODEL = "models/shapes-sd3"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MAKE_TORCH = re.search(
    r"^TORCH_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE
).group(1)


# --- reading a Dockerfile -------------------------------------------------------------------


@dataclass
class Instruction:
    """One instruction with its continuation lines joined; ``line`` is where it starts."""

    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    """What a build stage leaves behind; a ``FROM <stage>`` starts from a copy of it."""

    name: str | None
    base: str
    env: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    workdir: str = "/"
    cmd: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    copies: list[tuple[int, str, list[str], str, bool]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)

    def inherit(self, name: str | None) -> Stage:
        """A stage built ``FROM`` this one: ENV, USER, WORKDIR, CMD... carry over; ARGs do not."""
        return Stage(
            name, self.base, dict(self.env), {}, self.user, self.workdir, list(self.cmd),
            list(self.entrypoint), list(self.volumes), list(self.copies), [],
        )  # fmt: skip


def parse_instructions(text: str) -> list[Instruction]:
    """Split into instructions: comment lines are dropped, also inside a continuation."""
    out: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1]
            continue
        keyword, _, args = (pending + raw).strip().partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        pending = ""
    assert not pending, "the Dockerfile ends inside a line continuation"
    return out


def substitute(text: str, variables: dict[str, str]) -> str:
    """Docker's ``$VAR``, ``${VAR}`` and ``${VAR:-default}``; unset variables are empty."""

    def one(match: re.Match) -> str:
        name = match.group(1) or match.group(3)
        value = variables.get(name, "")
        return value or (match.group(2) or "")

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)", one, text)


def _words(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def read_stages(text: str) -> list[Stage]:
    """The stages in order, with substitution scoped the way Docker scopes ARG and ENV."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in parse_instructions(text):
        stage = stages[-1] if stages else None
        if ins.keyword == "ARG":
            name, has_default, default = ins.args.partition("=")
            if stage is None:
                global_args[name] = default
            else:
                stage.args[name] = default if has_default else global_args.get(name, "")
            continue
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            base = substitute(words[0], global_args)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            parent = next((s for s in stages if s.name == base), None)
            stages.append(parent.inherit(name) if parent else Stage(name, base))
            continue
        assert stage is not None, f"line {ins.line}: {ins.keyword} before FROM"
        scope = {**stage.args, **stage.env}
        if ins.keyword == "ENV":  # values see the variables from before this instruction
            words = shlex.split(ins.args)
            if "=" not in words[0]:  # legacy `ENV key value`
                words = [f"{words[0]}={' '.join(words[1:])}"]
            for word in words:
                key, _, value = word.partition("=")
                stage.env[key] = substitute(value, scope)
        elif ins.keyword == "USER":
            stage.user = substitute(ins.args, scope)
        elif ins.keyword == "WORKDIR":
            stage.workdir = posixpath.join(stage.workdir, substitute(ins.args, scope))
        elif ins.keyword in ("CMD", "ENTRYPOINT"):
            words = (
                json.loads(ins.args) if ins.args.startswith("[") else ["/bin/sh", "-c", ins.args]
            )
            setattr(stage, ins.keyword.lower(), words)
        elif ins.keyword == "VOLUME":
            stage.volumes += [substitute(v, scope) for v in _words(ins.args)]
        elif ins.keyword in ("COPY", "ADD"):
            words = [substitute(w, scope) for w in _words(ins.args)]
            flags = [w for w in words if w.startswith("--")]
            rest = [w for w in words if not w.startswith("--")]
            dest = posixpath.join(stage.workdir, rest[-1])
            from_stage = any(f.startswith("--from=") for f in flags)
            stage.copies.append((ins.line, ins.keyword, rest[:-1], dest, from_stage))
        elif ins.keyword == "RUN":
            stage.runs.append(substitute(ins.args, scope))
    return stages


# --- .dockerignore --------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            body = pattern[i + 1 : end]
            out, i = out + "[" + ("^" + body[1:] if body.startswith("!") else body) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def read_dockerignore(text: str) -> list[tuple[bool, re.Pattern]]:
    """(negated, regex) per pattern, cleaned as Docker cleans them."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip().lstrip("/"))
        rules.append((negated, _pattern_regex(pattern)))
    return rules


def is_excluded(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's rule: a pattern matches a path or any of its parents; the last match wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negated
    return excluded


# --- checks: each returns a list of problems ------------------------------------------------


def copy_problems(stages: list[Stage], root: Path, ignore_text: str) -> list[str]:
    """COPY/ADD sources exist in the context, survive .dockerignore, carry no model weights."""
    rules, problems = read_dockerignore(ignore_text), []
    copies = {copy[0]: copy for stage in stages for copy in stage.copies}  # by line: no repeats
    for line, keyword, sources, _dest, from_stage in sorted(copies.values()):
        for source in sources:
            if from_stage:
                continue
            where = f"line {line}: {keyword} {source}"
            if re.match(r"\w+://", source):
                problems.append(f"{where}: downloads at build time; install a package instead")
                continue
            if source.endswith(WEIGHT_SUFFIXES):
                problems.append(f"{where}: copies model weights; they belong in the HF_HOME volume")
            matches = [root] if source in (".", "./") else sorted(root.glob(source.lstrip("/")))
            if not matches:
                problems.append(f"{where}: not in the build context (the repository root)")
            for match in matches:
                rel = match.relative_to(root).as_posix()
                if rel != "." and is_excluded(rel, rules):
                    problems.append(f"{where}: excluded by .dockerignore")
                    continue
                files = [match] if match.is_file() else match.rglob("*")
                for path in files:
                    inner = path.relative_to(root).as_posix()
                    allowed = is_excluded(inner, rules) or inner.startswith(SHIPPED_MODEL + "/")
                    if path.suffix in WEIGHT_SUFFIXES and not allowed:
                        problems.append(f"{where}: copies model weights ({inner})")
    return problems


def _pins(stages: list[Stage], pattern: str) -> list[tuple[str, str]]:
    return [m.groups() for s in stages for run in s.runs for m in re.finditer(pattern, run)]


def pin_problems(stages: list[Stage], torch: str, ray: str, pyproject: dict) -> list[str]:
    """torch == the Makefile's; ray == the venv's; both, and Python, satisfy pyproject.toml."""
    problems = []
    wanted = {Requirement(r).name: Requirement(r) for r in pyproject["project"]["dependencies"]}
    torch_pins = _pins(stages, r"\btorch()==([^\s\"']*)")
    ray_pins = _pins(stages, r"\bray(\[[^\]]*\])?==([^\s\"']*)")
    for name, pins, expected in (("torch", torch_pins, torch), ("ray", ray_pins, ray)):
        if not pins:
            problems.append(f"{name} is not pinned with == in any RUN")
        for _extras, pin in pins:
            if pin != expected:
                problems.append(f"{name}=={pin} in the image, the project uses {expected}")
            elif pin not in wanted[name].specifier:
                problems.append(f"{name}=={pin} does not satisfy pyproject's {wanted[name]}")
    extras = [set((e or "[]")[1:-1].split(",")) for e, _pin in ray_pins]
    if not any({"serve", "train"} <= e for e in extras):
        problems.append("no ray pin installs the serve and train extras")
    bases = sorted({s.base for s in stages} - {s.name for s in stages})  # external images
    for base in bases:
        if base.startswith("rayproject/ray:") and not base.split(":")[1].startswith(f"{ray}-"):
            problems.append(f"base image {base} does not carry Ray {ray}")
    pythons = [m for b in bases for m in re.findall(r"py(3)(\d+)|python:(3)\.(\d+)", b)]
    requires = SpecifierSet(pyproject["project"]["requires-python"])
    if not pythons:
        problems.append(f"no Python version in the base images {bases}")
    for groups in pythons:
        major, minor = [g for g in groups if g]
        if f"{major}.{minor}" not in requires:
            problems.append(f"Python {major}.{minor} in the image, pyproject wants {requires}")
    return problems


def entry_modules(stage: Stage) -> list[str]:
    """The ``python -m MODULE`` of the stage's ENTRYPOINT + CMD."""
    words = stage.entrypoint + stage.cmd
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-m"]


def runtime_problems(stage: Stage) -> list[str]:
    """Non-root user, a WORKDIR, HF_HOME as a VOLUME, a CMD whose module exists."""
    problems = []
    user = (stage.user or "").split(":")[0]
    if user in ("", "root", "0"):
        problems.append(f"target {stage.name} runs as {stage.user or 'the base image user'}")
    if stage.workdir == "/":
        problems.append(f"target {stage.name} has no WORKDIR")
    hf_home = stage.env.get("HF_HOME")
    if not hf_home or hf_home not in stage.volumes:
        problems.append(f"target {stage.name}: HF_HOME={hf_home} is not a VOLUME {stage.volumes}")
    modules = entry_modules(stage)
    if not modules:
        problems.append(f"target {stage.name}: no `python -m MODULE` command")
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            problems.append(f"target {stage.name}: module {module} does not exist")
    return problems


def workdir_problems(stage: Stage, paths: list[str]) -> list[str]:
    """Files the commands name relative to the working directory are copied there."""
    copied = {
        posixpath.normpath(src): posixpath.normpath(dest)
        for _line, _kw, sources, dest, from_stage in stage.copies
        if not from_stage
        for src in sources
    }
    problems = []
    for path in paths:
        ok = any(
            (path == src or path.startswith(src + "/"))
            and dest == posixpath.join(stage.workdir, src)
            for src, dest in copied.items()
        )
        if not ok:
            problems.append(f"target {stage.name}: {path} is not copied into {stage.workdir}")
    return problems


def relative_paths_used() -> list[str]:
    """The shipped configs and the prompt files they name, all relative to the launch dir."""
    paths = ["deploy/configs/local.yaml", "deploy/serve/local.yaml"]
    for config in sorted((ROOT / "deploy" / "configs").glob("*.yaml")):
        data = yaml.safe_load(config.read_text()).get("data", {})
        for key in ("train_prompts", "eval_prompts"):
            value = data.get(key, [])
            paths += [value] if isinstance(value, str) else value
    return sorted(set(paths))


def all_problems(dockerfile: str, ignore_text: str) -> list[str]:
    """Every check on one Dockerfile text."""
    stages = read_stages(dockerfile)
    targets = {s.name: s for s in stages}
    problems = copy_problems(stages, ROOT, ignore_text)
    problems += pin_problems(stages, MAKE_TORCH, installed_version("ray"), PYPROJECT)
    if stages[-1].name != "trainer":
        problems.append(f"the default (last) target is {stages[-1].name}, not trainer")
    for name in TARGETS:
        if name not in targets:
            problems.append(f"no target {name}")
            continue
        problems += runtime_problems(targets[name])
        problems += workdir_problems(targets[name], relative_paths_used())
    return problems


# --- the real files -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stages() -> dict[str | None, Stage]:
    return {s.name: s for s in read_stages(DOCKERFILE.read_text())}


def test_copy_sources_exist_are_not_ignored_and_are_no_weights(stages):
    assert copy_problems(list(stages.values()), ROOT, DOCKERIGNORE.read_text()) == []


def test_pins_match_the_project(stages):
    ray = installed_version("ray")
    assert pin_problems(list(stages.values()), MAKE_TORCH, ray, PYPROJECT) == []


@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_as_non_root_with_hf_cache_volume_and_existing_command(stages, target):
    assert runtime_problems(stages[target]) == []
    assert workdir_problems(stages[target], relative_paths_used()) == []


def test_trainer_is_the_default_target():
    assert read_stages(DOCKERFILE.read_text())[-1].name == "trainer"


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_default_command_prints_usage_here(stages, target):
    """The image's default command, run with this venv: a help text, exit code 0."""
    cmd = stages[target].cmd
    assert cmd[:2] == ["python", "-m"], cmd
    done = subprocess.run(
        [sys.executable, *cmd[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


@pytest.mark.parametrize(
    "path", [".venv/bin/python", "runs/local/x/metrics.jsonl", "results/bench/a.json",
             ".git/HEAD", "services/__pycache__/serve.cpython-311.pyc", ".pytest_cache/v",
             ".ruff_cache/x", "docs/serving.md", "tests/unit/test_docker.py",
             "trainer/model/weights.safetensors", "apex_align.egg-info/PKG-INFO"],
)  # fmt: skip
def test_dockerignore_keeps_local_state_out(path):
    assert is_excluded(path, read_dockerignore(DOCKERIGNORE.read_text()))


@pytest.mark.parametrize(
    "path",
    ["pyproject.toml", "common/vocabulary.py", "services/serve.py", "deploy/serve/local.yaml"],
)
def test_dockerignore_lets_the_sources_in(path):
    assert not is_excluded(path, read_dockerignore(DOCKERIGNORE.read_text()))


# --- the checks bite: broken variants of the real Dockerfile --------------------------------

DEPLOY = "COPY --chown=ray:users deploy "
MUTATIONS = {  # name: (old, new, a problem that must then appear)
    "torch pin": ("ARG TORCH_VERSION=2.13.0", "ARG TORCH_VERSION=2.4.0", "torch==2.4.0"),
    "ray pin": ("ARG RAY_VERSION=2.60.0", "ARG RAY_VERSION=2.39.0", "ray==2.39.0"),
    "ray extras": ("ray[serve,train]==", "ray[serve]==", "serve and train extras"),
    "ARG not redeclared in its stage": ("ARG TORCH_VERSION\n", "", "torch== in the image"),
    "python": ("ARG PYTHON_TAG=py311", "ARG PYTHON_TAG=py39", "Python 3.9"),
    "root": ("USER ray\n", "USER root\n", "runs as root"),
    "HF cache": ('VOLUME ["/home/ray/.cache/huggingface"]', 'VOLUME ["/data"]', "not a VOLUME"),
    "module": ('"trainer.config"', '"trainer.no_such_module"', "trainer.no_such_module"),
    "missing source": (DEPLOY, "COPY --chown=ray:users deploy_x ", "not in"),
    "ignored source": (DEPLOY, "COPY --chown=ray:users .venv ", "excluded"),
    "weights": (DEPLOY, "COPY sd3.safetensors ", "model weights"),
    "download": (DEPLOY, "ADD https://x.org/w.bin ", "downloads"),
    "prompts": ("COPY --chown=ray:users trainer/data ./trainer/data\n", "", "prompts"),
    "default target": ("FROM runtime AS trainer", "FROM runtime AS trainer2", "no target trainer"),
}  # fmt: skip


def test_the_real_dockerfile_has_no_problems():
    assert all_problems(DOCKERFILE.read_text(), DOCKERIGNORE.read_text()) == []


@pytest.mark.parametrize("old,new,expected", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_each_check_catches_a_broken_dockerfile(old, new, expected):
    text = DOCKERFILE.read_text()
    assert old in text, f"the mutation no longer applies: {old!r}"
    problems = all_problems(text.replace(old, new), DOCKERIGNORE.read_text())
    assert any(expected in p for p in problems), problems


def test_parser_joins_continuations_and_skips_comments():
    text = (
        "FROM a:1 AS b\n# c\nRUN one \\\n  # inside\n  two\nENV K=v\nENV L=$K/x \\\n M=${L:-no}\n"
    )
    (stage,) = read_stages(text)
    assert stage.runs == ["one   two"]
    assert stage.env == {"K": "v", "L": "v/x", "M": "no"}  # as Docker: M sees the old L


# --- make docker, with a stand-in docker CLI ------------------------------------------------


MAKE = shutil.which("make") or "make"
_MAKE_VARS = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "TORCH_VERSION", "DOCKER_IMAGE"}


def _make_docker(tmp_path: Path, info_exit: int | None) -> tuple[subprocess.CompletedProcess, str]:
    """Run ``make docker`` with a fake ``docker`` first on PATH (None: no docker at all)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "docker.log"
    bin_dir.mkdir()
    path = str(bin_dir)
    if info_exit is not None:
        fake = bin_dir / "docker"
        fake.write_text(
            f'#!/bin/sh\necho "$@" >> {log}\n[ "$1" = info ] && exit {info_exit}\nexit 0\n'
        )
        fake.chmod(0o755)
        path += os.pathsep + "/usr/bin:/bin"
    env = {k: v for k, v in os.environ.items() if k not in _MAKE_VARS}  # no outer make's flags
    done = subprocess.run(
        [MAKE, "--no-print-directory", "docker"],
        cwd=ROOT, env={**env, "PATH": path}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done, log.read_text() if log.exists() else ""


def test_make_docker_stops_clearly_without_an_engine(tmp_path):
    done, calls = _make_docker(tmp_path, info_exit=1)
    assert done.returncode != 0
    assert "no Docker engine" in done.stderr
    assert calls.splitlines() == ["info"]


def test_make_docker_stops_clearly_without_the_cli(tmp_path):
    done, _ = _make_docker(tmp_path, info_exit=None)
    assert done.returncode != 0
    assert "docker CLI is not installed" in done.stderr


def test_make_docker_builds_both_targets_tagged_with_the_project_version(tmp_path):
    done, calls = _make_docker(tmp_path, info_exit=0)
    assert done.returncode == 0, done.stderr
    tag = f"apex-align:{PYPROJECT['project']['version']}"
    common = f"build -f docker/Dockerfile --build-arg TORCH_VERSION={MAKE_TORCH}"
    assert calls.splitlines() == [
        "info",
        f"{common} --target trainer -t {tag} .",
        f"{common} --target rewards -t {tag}-rewards .",
    ]
    assert re.search(r"^\.PHONY:.*\bdocker\b", (ROOT / "Makefile").read_text(), re.MULTILINE)
