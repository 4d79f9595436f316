"""Static guard: nothing that reads network or file input can execute what it reads.

Walks the syntax tree of every module under ``common/``, ``services/`` and ``trainer/`` and
fails on: an import of ``pickle`` (or ``cloudpickle``, ``dill``, ``marshal``, ``shelve``,
``jsonpickle``), a call of the builtins ``eval``/``exec``/``compile``, ``allow_pickle=True``,
``torch.load`` without ``weights_only=True``, ``yaml.load`` (instead of ``safe_load``), and
``trust_remote_code=True`` outside the one reward that needs it (DeQA, pinned revision).
Ray serializes objects between its own processes; that is inside the cluster, not the wire.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(
    p
    for package in ("common", "services", "trainer")
    for p in (ROOT / package).rglob("*.py")
    if "proto" not in p.relative_to(ROOT).parts  # generated gRPC code
)
UNSAFE_MODULES = {"pickle", "cloudpickle", "dill", "marshal", "shelve", "jsonpickle"}
UNSAFE_BUILTINS = {"eval", "exec", "compile"}
REMOTE_CODE_ALLOWED = {"services/rewards/deqa.py"}


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def unsafe_uses(source: str, relative: str) -> list[str]:
    """Every unsafe construct in ``source``, as ``line: what``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]]
        else:
            names = []
        found += [f"{node.lineno}: import {n}" for n in names if n in UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        func = _dotted(node.func)
        if func in UNSAFE_BUILTINS:
            found.append(f"{node.lineno}: {func}()")
        if _is_true(_keyword(node, "allow_pickle")):
            found.append(f"{node.lineno}: allow_pickle=True")
        if func.endswith("torch.load") and not _is_true(_keyword(node, "weights_only")):
            found.append(f"{node.lineno}: torch.load without weights_only=True")
        if func == "yaml.load":
            found.append(f"{node.lineno}: yaml.load (use yaml.safe_load)")
        if _is_true(_keyword(node, "trust_remote_code")) and relative not in REMOTE_CODE_ALLOWED:
            found.append(f"{node.lineno}: trust_remote_code=True")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_unsafe_deserialization_or_code_execution(path):
    relative = str(path.relative_to(ROOT))
    assert unsafe_uses(path.read_text(), relative) == []


@pytest.mark.parametrize(
    ("source", "what"),
    [
        ("import pickle", "import pickle"),
        ("from cloudpickle import loads", "import cloudpickle"),
        ("eval(text)", "eval()"),
        ("np.load(f, allow_pickle=True)", "allow_pickle=True"),
        ("torch.load(path)", "torch.load without weights_only=True"),
        ("yaml.load(text)", "yaml.load"),
        ("AutoModel.from_pretrained(m, trust_remote_code=True)", "trust_remote_code=True"),
    ],
)
def test_the_guard_catches_each_construct(source, what):
    assert any(what in use for use in unsafe_uses(source, "services/x.py"))


def test_the_guard_accepts_the_safe_forms():
    safe = "torch.load(p, weights_only=True)\nyaml.safe_load(t)\nnp.load(f, allow_pickle=False)"
    assert unsafe_uses(safe, "services/x.py") == []


def test_deqa_loads_remote_code_only_from_a_pinned_revision():
    source = (ROOT / "services/rewards/deqa.py").read_text()
    assert "trust_remote_code=True" in source
    assert "40-hex" in source or "[0-9a-f]{40}" in source
