"""Nothing listens beyond loopback without authentication (issue 16, item 5).

A default ``make serve`` (``deploy/serve/local.yaml``, Ray's default token auth, no reward
token) runs as its own process; every TCP socket its process tree listens on is listed and
probed without credentials (``listening.py``). The reward API must be on loopback, gRPC off,
and every non-loopback port must refuse an unauthenticated call, Ray's read-only Prometheus
exporters excepted. A second ``make serve`` with ``ingress.tls`` proves HTTPS with the bearer
token on Serve's own proxy. Each costs its own Ray (~40-60 s on 2 cores), hence ``slow``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import ssl

import httpx
import pytest
import yaml

from bench.common import free_port
from tests.integration.listening import is_loopback, listeners, probe, process_tree
from tests.integration.serve_process import serve_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _env(tmp_path, **extra: str) -> dict[str, str]:
    """The user's environment: Ray's default token auth (token in the env, not in ~/.ray)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "APEX_REWARD_TOKEN")}
    env.update(APEX_STATE_DIR=str(tmp_path / "state"), RAY_AUTH_TOKEN=secrets.token_hex(16))
    env.update(extra)
    return env


def test_default_make_serve_opens_nothing_without_auth(tmp_path):
    http = free_port()
    args = ["deploy/serve/local.yaml", "--num-cpus", "4", "--http-port", str(http)]
    args += ["--metrics-port", str(free_port())]
    with serve_process(args, _env(tmp_path)) as served:
        assert "gRPC     off" in served.banner
        found = listeners(process_tree(served.proc.pid))
        exposed = [probe(s) for s in found if not is_loopback(s.ip)]
        ingress = [s for s in found if s.port == http]
        assert [s.ip for s in ingress] == ["127.0.0.1"], found  # the reward API: loopback only
        # the probe tells an open port: the (token-less) reward API answers it on loopback
        assert probe(ingress[0]).verdict == "open"
    assert exposed, "Ray listens on the machine's interface: the census must see it"
    bad = [str(s) for s in exposed if s.verdict not in ("authenticated", "metrics")]
    assert not bad, "open without auth:\n" + "\n".join(bad)
    assert any(s.process == "gcs_server" and s.verdict == "authenticated" for s in exposed)


def _self_signed(tmp_path) -> tuple[str, str]:
    """A certificate for 127.0.0.1/localhost and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def test_https_ingress_with_token(tmp_path):
    cert, key = _self_signed(tmp_path)
    token = secrets.token_hex(16)
    (tmp_path / "token").write_text(token)
    http = free_port()
    config = {
        "deployments": [{"reward": "colorfulness", "num_cpus": 0.25}],
        "ingress": {
            "http_port": http,
            "num_cpus": 0.1,
            "tls": {"certfile": cert, "keyfile": key},
            "auth_token_file": str(tmp_path / "token"),
        },
    }
    path = tmp_path / "tls.yaml"
    path.write_text(yaml.safe_dump(config))
    args = [str(path), "--num-cpus", "2", "--metrics-port", str(free_port())]
    with serve_process(args, _env(tmp_path)) as served:
        url = f"https://127.0.0.1:{http}"
        assert f"HTTP     {url}" in served.banner and "auth     on" in served.banner
        trusted = ssl.create_default_context(cafile=cert)
        with httpx.Client(verify=trusted, timeout=30) as client:
            assert client.get(f"{url}/v1/rewards").status_code == 401
            bearer = {"authorization": f"Bearer {token}"}
            listed = client.get(f"{url}/v1/rewards", headers=bearer)
            assert listed.status_code == 200, listed.text
            assert [r["name"] for r in listed.json()["rewards"]] == ["colorfulness"]
        with pytest.raises(httpx.HTTPError):  # plaintext is not served
            httpx.get(f"http://127.0.0.1:{http}/v1/rewards", headers=bearer, timeout=10)
        with pytest.raises(httpx.ConnectError):  # nor a certificate the client does not trust
            httpx.get(f"{url}/v1/rewards", headers=bearer, timeout=10)
