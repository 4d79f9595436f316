"""The exposure rule: a port beyond loopback needs the bearer token (services/serving/exposure.py).

Pure checks, then the two places it is enforced before anything starts: ``make serve``
(exit 2, no Ray started) and Serve's app builder (``serve deploy``). The sockets of a real
``make serve`` are censused in tests/integration/test_exposure.py.
"""

from __future__ import annotations

import pytest

from services.config import IngressConfig, load_services_config
from services.serving.exposure import check_exposure, exposure_problem, is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("rewards.internal", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_the_default_ingress_is_loopback_http_only_and_needs_no_token():
    ingress = IngressConfig()
    assert (ingress.host, ingress.grpc_port) == ("127.0.0.1", 0)
    assert exposure_problem(ingress, token=None) is None


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"grpc_port": 9000}, "gRPC on [::]:9000 (Serve's gRPC proxy listens on every interface"),
        ({"host": "0.0.0.0"}, "HTTP on 0.0.0.0:8000"),
        ({"host": "10.1.2.3", "grpc_port": 9001}, "HTTP on 10.1.2.3:8000 and gRPC on [::]:9001"),
    ],
)
def test_an_open_port_without_a_token_is_refused_naming_the_fixes(fields, words):
    problem = exposure_problem(IngressConfig(**fields), token=None)
    assert problem is not None and words in problem
    for fix in ("$APEX_REWARD_TOKEN", "grpc_port: 0", "allow_unauthenticated: true"):
        assert fix in problem


def test_a_token_or_an_explicit_opt_out_allows_it():
    open_ingress = {"host": "0.0.0.0", "grpc_port": 9000}
    assert exposure_problem(IngressConfig(**open_ingress), token="s3cret") is None
    allowed = IngressConfig(**open_ingress, allow_unauthenticated=True)
    assert exposure_problem(allowed, token=None) is None


def test_check_exposure_reads_the_token_like_the_ingress(monkeypatch, tmp_path):
    monkeypatch.delenv("APEX_REWARD_TOKEN", raising=False)
    with pytest.raises(ValueError, match=r"\$APEX_REWARD_TOKEN"):
        check_exposure(IngressConfig(grpc_port=9000))
    monkeypatch.setenv("APEX_REWARD_TOKEN", "s3cret")
    check_exposure(IngressConfig(grpc_port=9000))
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    monkeypatch.delenv("APEX_REWARD_TOKEN")
    check_exposure(IngressConfig(grpc_port=9000, auth_token_file=str(token_file)))


@pytest.mark.parametrize("flags", [["--grpc-port", "9000"], ["--host", "0.0.0.0"]])
def test_make_serve_refuses_an_open_port_before_ray_starts(monkeypatch, capsys, flags):
    import ray

    from services.serve import main

    monkeypatch.delenv("APEX_REWARD_TOKEN", raising=False)
    was_running = ray.is_initialized()
    assert main(["deploy/serve/local.yaml", *flags]) == 2
    assert ray.is_initialized() == was_running
    err = capsys.readouterr().err
    assert "without a token" in err and "$APEX_REWARD_TOKEN" in err


def test_serve_deploy_builder_refuses_an_open_grpc_port(monkeypatch):
    from services.serving.app import app_builder

    monkeypatch.delenv("APEX_REWARD_TOKEN", raising=False)
    args = {"deployments": [{"reward": "colorfulness"}], "ingress": {"grpc_port": 9000}}
    with pytest.raises(ValueError, match=r"gRPC on \[::\]:9000"):
        app_builder(args)
    monkeypatch.setenv("APEX_REWARD_TOKEN", "s3cret")
    assert app_builder(args) is not None


def test_tls_maps_onto_serves_https_options():
    from services.serving.app import http_options

    config = load_services_config(
        {
            "deployments": [{"reward": "colorfulness"}],
            "ingress": {"tls": {"certfile": "/c.pem", "keyfile": "/k.pem"}},
        }
    )
    assert http_options(config) == {
        "host": "127.0.0.1",
        "port": 8000,
        "ssl_certfile": "/c.pem",
        "ssl_keyfile": "/k.pem",
    }
    from services.serve import urls

    assert urls(config)["http"] == "https://127.0.0.1:8000"
