"""``python -m services.serve``: the trainer's dotted overrides and messages, before Ray starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.serve import DEFAULT_CONFIG, main, parse_args, resolve_config

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "deploy" / "serve" / "local.yaml"


def test_overrides_set_any_key_and_the_flags_still_work():
    args = parse_args([str(LOCAL), "ingress.http_port=8123", "--num-cpus", "8", "access_log=true"])
    assert args.num_cpus == 8 and args.overrides == ["ingress.http_port=8123", "access_log=true"]
    config = resolve_config(args)
    assert config.ingress.http_port == 8123 and config.access_log is True
    flags = resolve_config(parse_args([str(LOCAL), "--http-port", "9001", "--host", "::"]))
    assert (flags.ingress.http_port, flags.ingress.host) == (9001, "::")


def test_overrides_without_a_config_apply_to_the_default_one(monkeypatch):
    monkeypatch.chdir(ROOT)
    args = parse_args(["deployments.0.num_replicas=2"])
    assert args.config == DEFAULT_CONFIG and args.overrides == ["deployments.0.num_replicas=2"]
    assert resolve_config(args).deployments[0].num_replicas == 2


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("ingress.http_prot=1", ["'ingress.http_prot'", "did you mean 'ingress.http_port'?"]),
        ("ingress.http_port=0", ["ingress.http_port: must be >= 1, got 0"]),
        ("deployments.0.reward=ocrr", ["deployments.0.reward: unknown reward 'ocrr'", "'ocr'"]),
        (
            "deployments.0.params.min_confidnce=0.3",
            ["'deployments.0.params.min_confidnce'", "did you mean", "(reward 'ocr')"],
        ),
        ("deployments.9.num_cpus=1", ["deployments has 4 entries, no index 9"]),
    ],
)  # fmt: skip
def test_a_bad_override_exits_2_naming_the_key(capsys, override, words):
    assert main([str(LOCAL), override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("services.serve: error: invalid config") or "bad override" in err, err
    for word in words:
        assert word in err, err
    assert "Traceback" not in err


def test_the_command_line_exits_2_without_starting_ray(tmp_path):
    code = (
        "import sys; from services.serve import main; rc = main(sys.argv[1:]);"
        "print(rc, 'ray' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(LOCAL), "ingress.http_prot=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["2", "False"], out.stderr
    assert "did you mean 'ingress.http_port'?" in out.stderr
