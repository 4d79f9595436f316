"""Repository invariants: the core stays pure, files stay small and documented, make targets exist."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("trainer", "services", "bench") for p in (ROOT / d).rglob("*.py"))


def test_core_imports_without_ray_http_or_diffusers():
    code = (
        "import sys, trainer.core.balance, trainer.core.sde, trainer.core.losses;"
        "bad = [m for m in ('ray', 'fastapi', 'grpc', 'diffusers', 'transformers') "
        "if m in sys.modules]; print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"trainer.core pulled in: {out.stdout.strip()}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_are_small_and_documented(path):
    text = path.read_text()
    assert len(text.splitlines()) <= 800, "split this file: over 800 lines"
    tree = ast.parse(text)
    assert ast.get_docstring(tree), "module docstring missing"
    for node in tree.body:
        public = isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_")
        if public:
            assert ast.get_docstring(node), f"{node.name} has no docstring"


def test_makefile_targets_exist_and_depend_on_setup():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("test", "lint", "train", "serve", "bench"):
        match = re.search(rf"^{target}:(.*)$", makefile, re.MULTILINE)
        assert match, f"make {target} is missing"
        assert "setup" in match.group(1), f"make {target} must depend on setup"


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
