"""Regenerate ``services/proto/reward_pb2{,_grpc}.py`` and ``reward_pb2.pyi`` from ``protos/``.

Usage: ``python -m services.proto.generate`` (``make proto``), then commit the changed files.

protoc derives Python module names from the .proto's path, so the source is compiled from a
temporary copy at ``services/proto/reward.proto``: the output then imports
``services.proto.reward_pb2`` and registers its message classes under that module (which
pickling, e.g. by Ray, relies on) without any generated line being edited. The proto package
(``reward.v1``) and so every wire name (``/reward.v1.RewardService/Score``) are unchanged.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_SOURCE = ROOT / "protos" / "reward" / "v1" / "reward.proto"
PACKAGE_DIR = Path(__file__).resolve().parent
GENERATED_FILES = ("reward_pb2.py", "reward_pb2.pyi", "reward_pb2_grpc.py")
# Generated stubs are not ours to lint or format; the .py twins are excluded in pyproject.toml.
_STUB_HEADER = "# ruff: noqa\n# fmt: off\n"


def generate(out_dir: Path, source: Path = PROTO_SOURCE) -> list[Path]:
    """Compile ``source`` into ``out_dir``; return the written files, in GENERATED_FILES order."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src_root, gen_root = Path(tmp) / "src", Path(tmp) / "gen"
        staged = src_root / "services" / "proto" / "reward.proto"
        staged.parent.mkdir(parents=True)
        gen_root.mkdir()
        shutil.copyfile(source, staged)
        well_known = resources.files("grpc_tools") / "_proto"
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{src_root}",
                f"-I{well_known}",
                f"--python_out={gen_root}",
                f"--pyi_out={gen_root}",
                f"--grpc_python_out={gen_root}",
                str(staged),
            ]
        )
        if status != 0:
            raise RuntimeError(f"protoc failed on {source} (exit status {status}); see above")
        written = []
        for name in GENERATED_FILES:
            text = (gen_root / "services" / "proto" / name).read_text()
            if name.endswith(".pyi"):
                text = _STUB_HEADER + text
            target = out_dir / name
            target.write_text(text)
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    """CLI: regenerate into ``services/proto`` (or ``--out``) and list the files written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PACKAGE_DIR, help="output directory")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
