"""``make wheelhouse`` (deploy/wheelhouse) and ``bench/gpu_check.sh --bundle``, without network.

The selection logic runs on hand-made resolutions (no pip); the CLI is checked for the errors
it gives before any download; gpu_check.sh is run with a stand-in interpreter that reports the
PYTHONPATH it was given, so the bundle's handling is checked without running the GPU check.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from deploy.wheelhouse import pack
from deploy.wheelhouse.__main__ import main, project_requirements
from deploy.wheelhouse.resolve import (
    Resolved,
    Target,
    WheelhouseError,
    constraints_for,
    never_include,
    parse_freeze,
    requirement_specifiers,
    resolved_from_report,
    satisfies,
    subtract,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "wheelhouse" / "gpu-image-freeze.example.txt"
GPU_CHECK = ROOT / "bench" / "gpu_check.sh"
TARGET = Target("3.12", "manylinux_2_28_x86_64")


def plan_for(resolved, roots, freeze):
    roots = [Requirement(r) for r in roots]
    return subtract(resolved, requirement_specifiers(roots, resolved, TARGET), freeze)


# --- the subtraction --------------------------------------------------------------------


def test_missing_package_is_packed_and_satisfied_one_is_left_to_the_image():
    resolved = [Resolved("ray", "2.60.0"), Resolved("numpy", "2.4.6")]
    plan = plan_for(resolved, ["ray>=2.40", "numpy>=1.26"], {"numpy": "2.3.5"})
    assert plan.include == {"ray": "2.60.0"}
    assert plan.in_image == {"numpy": "2.3.5"}
    assert plan.replaced == {}


def test_image_version_that_a_requirement_rejects_is_packed_and_reported():
    resolved = [Resolved("grpcio", "1.85.4"), Resolved("protobuf", "7.36.2")]
    freeze = {"grpcio": "1.84.0", "protobuf": "6.33.5"}
    plan = plan_for(resolved, ["grpcio>=1.85.1", "protobuf>=7.35.1,<8"], freeze)
    assert plan.include == {"grpcio": "1.85.4", "protobuf": "7.36.2"}
    assert plan.replaced == {"grpcio": "1.84.0", "protobuf": "6.33.5"}


def test_a_dependencys_requirement_counts_not_only_the_roots():
    # the root accepts any protobuf; grpcio-reflection (a transitive dependency) does not
    resolved = [
        Resolved("grpcio-reflection", "1.85.1", ("protobuf<8,>=7.34.0", "grpcio>=1.85.1")),
        Resolved("protobuf", "7.36.2"),
        Resolved("grpcio", "1.85.4"),
    ]
    plan = plan_for(resolved, ["grpcio-reflection", "protobuf"], {"protobuf": "6.33.5"})
    assert plan.include["protobuf"] == "7.36.2"
    assert plan.include["grpcio"] == "1.85.4"


def test_extras_are_followed_through_dependencies():
    # ray[serve] -> uvicorn[standard] -> uvloop; the image's old uvloop is not enough
    resolved = [
        Resolved("ray", "2.60.0", ('uvicorn[standard]>=0.26.0; extra == "serve"',)),
        Resolved("uvicorn", "0.55.0", ('uvloop>=0.15.1; extra == "standard"',)),
        Resolved("uvloop", "0.23.0"),
    ]
    plan = plan_for(resolved, ["ray[serve]"], {"uvloop": "0.14.0"})
    assert plan.include["uvloop"] == "0.23.0"
    # without the extra the requirement does not apply, so the image's uvloop is kept
    plan = plan_for(resolved, ["ray"], {"uvloop": "0.14.0"})
    assert plan.in_image == {"uvloop": "0.14.0"}


def test_markers_are_evaluated_for_the_target_not_this_machine():
    resolved = [
        Resolved("ray", "2.60.0", ('py-spy>=0.4.0; python_version >= "3.12"',)),
        Resolved("py-spy", "0.4.3"),
    ]
    freeze = {"py-spy": "0.3.0"}
    assert "py-spy" in plan_for(resolved, ["ray"], freeze).include
    old = Target("3.11", "manylinux_2_28_x86_64")
    specs = requirement_specifiers([Requirement("ray")], resolved, old)
    assert subtract(resolved, specs, freeze).in_image == {"py-spy": "0.3.0"}


def test_torch_triton_and_cuda_wheels_are_never_packed_even_when_missing():
    resolved = [
        Resolved("torch", "2.11.0"),
        Resolved("triton", "3.6.0"),
        Resolved("nvidia-cudnn-cu13", "9.19.0.56"),
        Resolved("nvidia_nccl_cu13", "2.28.9"),
        Resolved("cuda-bindings", "13.5.0"),
        Resolved("diffusers", "0.42.1"),
    ]
    plan = plan_for(resolved, ["torch>=2.4", "diffusers"], {"torch": "2.3.0"})
    assert plan.include == {"diffusers": "0.42.1"}
    assert set(plan.never) == {
        "torch",
        "triton",
        "nvidia-cudnn-cu13",
        "nvidia-nccl-cu13",
        "cuda-bindings",
    }
    assert never_include("Torch") and never_include("nvidia_cublas") and not never_include("ray")


def test_names_are_normalized_between_freeze_report_and_requirements():
    freeze = parse_freeze("PyYAML==6.0.3\ntyping_extensions==4.15.0\nJinja2==3.1.6\n")
    assert freeze == {"pyyaml": "6.0.3", "typing-extensions": "4.15.0", "jinja2": "3.1.6"}
    resolved = resolved_from_report(
        {
            "install": [
                {"metadata": {"name": "PyYAML", "version": "6.0.4"}},
                {"metadata": {"name": "Typing.Extensions", "version": "4.16.0"}},
                {"metadata": {"name": "jinja2", "version": "3.1.6"}},
            ]
        }
    )
    plan = plan_for(resolved, ["pyyaml>=6.0", "typing_extensions>=4.10", "JINJA2"], freeze)
    assert plan.include == {}
    assert set(plan.in_image) == {"pyyaml", "typing-extensions", "jinja2"}


def test_installed_prereleases_and_local_versions_count_unknown_versions_do_not():
    assert satisfies("2.11.0a0+gitabc", SpecifierSet(">=2.4"))
    assert satisfies("2.11.0+cu130", SpecifierSet("==2.11.0"))
    assert not satisfies("", SpecifierSet(""))
    assert not satisfies("not-a-version", SpecifierSet(""))


def test_constraints_keep_acceptable_image_pins_only():
    roots = [Requirement("grpcio>=1.85.1"), Requirement("numpy>=1.26")]
    freeze = {"grpcio": "1.84.0", "numpy": "2.3.5", "torch": "2.11.0+cu130", "mystery": ""}
    assert constraints_for(freeze, roots) == ["numpy==2.3.5", "torch==2.11.0"]


# --- the freeze file ----------------------------------------------------------------------


def test_freeze_parsing_skips_comments_options_and_editables():
    text = """# header comment
    --extra-index-url https://example.invalid/simple
    -e git+https://github.com/example/project.git@abc#egg=project
    numpy==2.3.5  # inline comment

    torch @ file:///tmp/wheels/torch-2.11.0%2Bcu130-cp312-cp312-linux_x86_64.whl
    apex @ file:///opt/apex
    flash-attn===2.8.3
    """
    assert parse_freeze(text) == {
        "numpy": "2.3.5",
        "torch": "2.11.0+cu130",
        "apex": "",
        "flash-attn": "2.8.3",
    }


@pytest.mark.parametrize("line", ["numpy>=2", "numpy", "numpy==2.*", "!!not a requirement"])
def test_freeze_line_that_is_not_a_pin_names_file_and_line(line):
    with pytest.raises(WheelhouseError, match=r"image\.txt:2:"):
        parse_freeze(f"# ok\n{line}\n", "image.txt")


def test_example_freeze_parses_and_has_the_described_image():
    freeze = parse_freeze(EXAMPLE.read_text(), str(EXAMPLE))
    assert freeze["torch"].startswith("2.11") and freeze["grpcio"].startswith("1.84")
    for name in ("transformers", "peft", "torchvision", "protobuf", "numpy"):
        assert name in freeze
    for absent in ("ray", "diffusers", "pydantic", "fastapi", "starlette", "uvicorn", "rapidfuzz"):
        assert absent not in freeze
    assert "EXAMPLE" in EXAMPLE.read_text().splitlines()[0]


# --- options ----------------------------------------------------------------------------


def test_platform_tags_cover_older_glibc_wheels():
    tags = TARGET.platform_tags()
    assert tags[0] == "manylinux_2_28_x86_64"
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux_2_29_x86_64" not in tags
    assert Target("3.11", "manylinux2014_aarch64").platform_tags()[0] == "manylinux_2_17_aarch64"
    assert "--abi" in pack.target_options(TARGET) and "cp312" in pack.target_options(TARGET)


@pytest.mark.parametrize(
    ("python", "platform", "message"),
    [
        ("3.12", "linux_x86_64", "expected a manylinux tag"),
        ("3.12", "manylinux_2_28_amd64", "expected a manylinux tag"),
        ("3.12", "win_amd64", "expected a manylinux tag"),
        ("312", "manylinux_2_28_x86_64", "expected MAJOR.MINOR"),
        ("3.12.1", "manylinux_2_28_x86_64", "expected MAJOR.MINOR"),
    ],
)
def test_bad_target_is_a_clear_error(python, platform, message):
    with pytest.raises(WheelhouseError, match=message):
        Target(python, platform)


def run_main(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_cli_missing_exclude_from_exits_2_naming_the_file(capsys, tmp_path):
    missing = tmp_path / "image-freeze.txt"
    code, err = run_main(capsys, "--exclude-from", str(missing))
    assert code == 2
    assert "EXCLUDE_FROM" in err and str(missing) in err and "no such file" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--platform", "macosx_14_0_arm64"], "platform 'macosx_14_0_arm64'"),
        (["--python-version", "twelve"], "python version 'twelve'"),
        (["--format", "zip"], "format 'zip'"),
        (["--extras", "nosuch"], "extra 'nosuch'"),
    ],
)
def test_cli_bad_option_exits_2_before_any_download(capsys, monkeypatch, argv, message):
    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run for a bad option")

    monkeypatch.setattr(pack, "resolve", no_pip)
    code, err = run_main(capsys, "--exclude-from", str(EXAMPLE), *argv)
    assert code == 2
    assert message in err


def test_cli_bad_freeze_line_exits_2(capsys, tmp_path):
    bad = tmp_path / "freeze.txt"
    bad.write_text("numpy==2.3.5\ntorch>=2\n")
    code, err = run_main(capsys, "--exclude-from", str(bad))
    assert code == 2 and f"{bad}:2:" in err


def test_project_requirements_come_from_pyproject():
    reqs = [Requirement(r) for r in project_requirements(ROOT / "pyproject.toml", [])]
    names = {r.name for r in reqs}
    assert {"ray", "diffusers", "pydantic", "fastapi", "grpcio", "protobuf"} <= names
    ray = next(r for r in reqs if r.name == "ray")
    assert {"serve", "train"} <= ray.extras


# --- packing, on a fake site tree -------------------------------------------------------


def test_strip_removes_jars_and_rllib_and_reports_sizes(tmp_path):
    site = tmp_path / "site"
    for rel in ("ray/jars/ray_dist.jar", "ray/rllib/algo.py", "ray/serve/api.py", "bin/ray"):
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(b"x" * 100)
    freed = pack.strip(site)
    assert freed == {"ray/jars": 100, "ray/rllib": 100, "bin": 100}
    assert (site / "ray/serve/api.py").exists() and not (site / "ray/jars").exists()


@pytest.mark.parametrize("xz_command", [True, False], ids=["xz command", "python lzma"])
def test_archive_is_a_tar_xz_with_the_manifest_first(tmp_path, monkeypatch, xz_command):
    if xz_command and shutil.which("xz") is None:
        pytest.skip("no xz command")
    if not xz_command:
        monkeypatch.setattr(pack.shutil, "which", lambda name: None)
    stage = tmp_path / "stage"
    (stage / "site" / "pkg").mkdir(parents=True)
    (stage / "site" / "pkg" / "__init__.py").write_text("X = 1\n")
    out = pack.archive(stage, ["site"], tmp_path / "a.tar.xz", {"python": "3.12"}, True)
    assert not out.with_name("a.tar.xz.partial").exists()
    with tarfile.open(out, "r:xz") as tar:
        names = tar.getnames()
        assert names[0] == "wheelhouse.json" and "site/pkg/__init__.py" in names
        assert json.load(tar.extractfile("wheelhouse.json")) == {"python": "3.12"}


# --- bench/gpu_check.sh --bundle ----------------------------------------------------------


def gpu_check(*args, env=None):
    return subprocess.run(
        ["bash", str(GPU_CHECK), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def make_bundle(path: Path, python: str, fmt: str = "site") -> Path:
    with tarfile.open(path, "w:xz") as tar:
        doc = json.dumps({"python": python, "format": fmt}).encode()
        info = tarfile.TarInfo("wheelhouse.json")
        info.size = len(doc)
        tar.addfile(info, io.BytesIO(doc))
        body = b"VERSION = 'from the bundle'\n"
        info = tarfile.TarInfo("site/bundled_marker.py")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return path


@pytest.fixture
def fake_python(tmp_path):
    """An interpreter that runs python, but reports instead of running gpu_check.py."""
    script = tmp_path / "python"
    script.write_text(
        "#!/usr/bin/env bash\n"
        'case "$1" in *gpu_check.py)\n'
        '  echo "PYTHONPATH=$PYTHONPATH"; echo "ARGS=${*:2}"\n'
        f'  exec {sys.executable} -c "import bundled_marker; print(bundled_marker.VERSION)";;\n'
        "esac\n"
        f'exec {sys.executable} "$@"\n'
    )
    script.chmod(0o755)
    return script


def test_gpu_check_missing_bundle_is_a_clear_error():
    done = gpu_check("--bundle", "/nonexistent/bundle.tar.xz")
    assert done.returncode == 2
    assert "/nonexistent/bundle.tar.xz" in done.stderr and "no such file" in done.stderr


def test_gpu_check_bundle_without_a_file_argument():
    done = gpu_check("--bundle")
    assert done.returncode == 2 and "--bundle needs a file" in done.stderr


def test_gpu_check_rejects_an_archive_that_is_not_a_wheelhouse(tmp_path):
    not_tar = tmp_path / "notes.txt"
    not_tar.write_text("hello\n")
    done = gpu_check("--bundle", str(not_tar))
    assert done.returncode == 2 and "not a tar archive" in done.stderr
    other = tmp_path / "other.tar"
    with tarfile.open(other, "w") as tar:
        tar.add(not_tar, arcname="notes.txt")
    done = gpu_check(f"--bundle={other}")
    assert done.returncode == 2 and "no wheelhouse.json" in done.stderr


def test_gpu_check_bundle_for_another_python_is_refused(tmp_path, fake_python):
    bundle = make_bundle(tmp_path / "b.tar.xz", "3.99")
    done = gpu_check("--bundle", str(bundle), env={"PYTHON": str(fake_python)})
    assert done.returncode == 2 and "is for Python 3.99" in done.stderr


def test_gpu_check_bundle_goes_first_on_pythonpath_and_is_removed(tmp_path, fake_python):
    here = "{}.{}".format(*sys.version_info[:2])
    bundle = make_bundle(tmp_path / "b.tar.xz", here)
    env = {"PYTHON": str(fake_python), "PYTHONPATH": "/image/site", "TMPDIR": str(tmp_path)}
    done = gpu_check("--out", "x.json", "--bundle", str(bundle), "--tiny", env=env)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    first, rest = lines["PYTHONPATH"].split(":", 1)
    assert first.endswith("/site") and first.startswith(str(tmp_path)) and rest == "/image/site"
    assert lines["ARGS"] == "--out x.json --tiny"  # the other arguments pass through, in order
    assert "from the bundle" in done.stdout
    assert not Path(first).exists()  # the temporary folder is gone after the run


def test_gpu_check_without_bundle_runs_gpu_check_py_as_before(fake_python):
    done = gpu_check("--help", env={"PYTHON": str(fake_python)})
    assert "ARGS=--help" in done.stdout
    assert "PYTHONPATH=" in done.stdout and "apex-wheelhouse" not in done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_wheelhouse_reads_a_bare_py_version_as_the_target_python():
    def dry(*args):
        cmd = ["make", "-s", "-n", "-C", str(ROOT), "wheelhouse", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout

    out = dry("PY=3.11", "EXCLUDE_FROM=freeze.txt")
    assert "--python-version 3.11" in out and "--exclude-from freeze.txt" in out
    assert "bin/python -m deploy.wheelhouse" in out
    assert "--python-version 3.10" in dry("PYVER=3.10")
