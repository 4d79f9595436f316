"""Optional bearer-token authentication for the external HTTP and gRPC entry points.

The token never lives in a config file of the repository: it is read from a file or an
environment variable named in the config. No token configured means no authentication
(the ingress then binds to loopback by default).
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from services.errors import Unauthenticated


def load_token(env_var: str | None, token_file: str | None) -> str | None:
    """The configured token: the file's content if given, else the env var; ``None`` = off."""
    if token_file:
        path = Path(token_file)
        if not path.is_file():
            raise ValueError(f"ingress.auth_token_file: {path} does not exist")
        token = path.read_text().strip()
        if not token:
            raise ValueError(f"ingress.auth_token_file: {path} is empty")
        return token
    value = os.environ.get(env_var or "", "").strip()
    return value or None


def check_bearer(header_value: str | None, token: str | None) -> None:
    """Raise ``Unauthenticated`` unless ``header_value`` is ``Bearer <token>`` (or auth is off)."""
    if token is None:
        return
    if not header_value:
        raise Unauthenticated("missing 'authorization: Bearer <token>'")
    scheme, _, given = header_value.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
    ):
        raise Unauthenticated("invalid bearer token")
