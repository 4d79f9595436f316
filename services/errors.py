"""Typed errors of the reward services and the one mapping to HTTP and gRPC status codes.

Every failure a caller can see is a ``RewardServiceError`` subclass; its class attributes are the
whole mapping table (machine-readable ``code``, ``http_status``, ``grpc_status``, ``retryable``),
so the HTTP ingress, the gRPC servicer and the client agree by construction:

- servers turn any exception into a response with ``to_http`` or ``to_grpc_status``;
- clients turn a response back into the same exception class with ``from_http``/``from_grpc``;
- retry loops ask ``is_retryable`` (exception, gRPC status code or HTTP status).

``InvalidInput`` (and its subclass ``PayloadTooLarge``) also subclass ``ValueError``, so raising
one inside a pydantic validator yields an ordinary ``ValidationError`` that
``from_validation_error`` turns back into the original class (a size limit stays 413, not 422).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import grpc
from pydantic import ValidationError


class RewardServiceError(Exception):
    """Base of every error a reward-service caller can see; the class attributes map it."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    grpc_status: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})


class InvalidInput(RewardServiceError, ValueError):
    """The request is malformed: bad image, bad prompt, wrong counts, schema violation."""

    # 422 for every "your request is wrong" case, like FastAPI's own body validation, so a
    # client sees one status whether the schema or the image decoder found the problem.
    code = "invalid_input"
    http_status = 422
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT


class PayloadTooLarge(InvalidInput):
    """A size limit was exceeded: encoded bytes, pixels, images per request, prompt length."""

    code = "payload_too_large"
    http_status = 413
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnknownReward(RewardServiceError):
    """The requested reward name is not served by this application."""

    code = "unknown_reward"
    http_status = 404
    grpc_status = grpc.StatusCode.NOT_FOUND


class Unauthenticated(RewardServiceError):
    """The request carries no valid credentials."""

    code = "unauthenticated"
    http_status = 401
    grpc_status = grpc.StatusCode.UNAUTHENTICATED


class Unavailable(RewardServiceError):
    """The reward cannot take requests now (starting, overloaded, replica lost); retry later."""

    code = "unavailable"
    http_status = 503
    grpc_status = grpc.StatusCode.UNAVAILABLE
    retryable = True


class ScoringTimeout(RewardServiceError):
    """Scoring did not finish within the deadline; retrying may succeed."""

    code = "timeout"
    http_status = 504
    grpc_status = grpc.StatusCode.DEADLINE_EXCEEDED
    retryable = True


class ScoringFailed(RewardServiceError):
    """The reward model raised while scoring a valid request (a server-side bug or fault)."""

    code = "scoring_failed"
    http_status = 500
    grpc_status = grpc.StatusCode.INTERNAL


ERROR_CLASSES: tuple[type[RewardServiceError], ...] = (
    InvalidInput,
    PayloadTooLarge,
    UnknownReward,
    Unauthenticated,
    Unavailable,
    ScoringTimeout,
    ScoringFailed,
)
_BY_CODE = {cls.code: cls for cls in ERROR_CLASSES}
_BY_HTTP = {cls.http_status: cls for cls in ERROR_CLASSES}
_BY_GRPC = {cls.grpc_status: cls for cls in ERROR_CLASSES}
# Statuses that intermediaries (load balancers, Serve's proxy) produce for transient trouble.
_RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
_RETRYABLE_GRPC = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def from_validation_error(exc: ValidationError | Sequence[Mapping[str, Any]]) -> InvalidInput:
    """One ``InvalidInput`` for a pydantic ``ValidationError``, naming each bad field.

    Also takes the error dicts alone (FastAPI's ``RequestValidationError.errors()``). When a
    validator raised one of our own errors (e.g. ``PayloadTooLarge``), that error is returned
    as is so that it keeps its status code.
    """
    items = exc.errors(include_url=False) if isinstance(exc, ValidationError) else exc
    problems = []
    for err in items:
        original = (err.get("ctx") or {}).get("error")
        if isinstance(original, InvalidInput) and type(original) is not InvalidInput:
            return original
        where = ".".join(str(part) for part in err["loc"]) or "body"
        message = original.message if isinstance(original, InvalidInput) else err["msg"]
        problems.append({"field": where, "message": message})
    text = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return InvalidInput(f"invalid request: {text}", details={"errors": problems})


def as_service_error(exc: BaseException) -> RewardServiceError:
    """Normalize any exception to a ``RewardServiceError`` (the input of both mappings).

    Unknown exceptions become ``ScoringFailed`` naming only the exception type, so internal
    messages (paths, tensors) do not leak to callers; log the original where it is caught.
    A bare pydantic ``ValidationError`` is one of those (it may come from building a
    response); request validation is converted explicitly with ``from_validation_error``.
    """
    if isinstance(exc, RewardServiceError):
        return exc
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        return from_grpc(
            exc.code(), exc.details() if callable(getattr(exc, "details", None)) else ""
        )
    if isinstance(exc, TimeoutError):
        return ScoringTimeout("scoring did not finish within the deadline")
    if isinstance(exc, ConnectionError):
        return Unavailable(f"reward service unreachable ({type(exc).__name__})")
    return ScoringFailed(f"internal error ({type(exc).__name__})")


def from_ray_error(exc: BaseException) -> RewardServiceError:
    """Map what a Ray deployment-handle call raises to a typed error (by class name: no Ray
    import here). A replica that died or is overloaded is ``Unavailable`` (retryable)."""
    if isinstance(exc, RewardServiceError):
        return exc
    cause = getattr(exc, "cause", None)
    if isinstance(cause, RewardServiceError):  # a RayTaskError wrapping one of ours
        return cause
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"TimeoutError", "GetTimeoutError"} or any("Timeout" in n for n in names):
        return ScoringTimeout("the reward did not answer within the timeout")
    markers = ("ActorDied", "ActorUnavailable", "BackPressure", "Unavailable", "RayActorError")
    if any(marker in n for n in names for marker in markers):
        return Unavailable(f"reward replica unavailable ({type(exc).__name__}); retry")
    return as_service_error(exc)


def to_http(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body (``ErrorResponse`` shape) for any exception."""
    err = as_service_error(exc)
    body = {"error": {"code": err.code, "message": err.message, "details": err.details}}
    return err.http_status, body


def to_grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and details message for any exception."""
    err = as_service_error(exc)
    return err.grpc_status, err.message


def from_http(status: int, body: Any) -> RewardServiceError:
    """Client side: rebuild the typed error from an HTTP error response.

    Uses the body's ``error.code`` when it is one of ours, else the status code; a body that
    is not our JSON shape (a proxy's HTML page) still yields a sensible class.
    """
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("code") in _BY_CODE:
        cls = _BY_CODE[error["code"]]
        details = error.get("details") if isinstance(error.get("details"), dict) else None
        return cls(str(error.get("message", "")), details=details)
    cls = _BY_HTTP.get(status)
    if cls is None:
        if status in _RETRYABLE_HTTP:
            cls = Unavailable
        elif 400 <= status < 500:
            cls = InvalidInput
        else:
            cls = ScoringFailed
    return cls(f"HTTP {status}: {str(body)[:500]}")


def from_grpc(code: grpc.StatusCode, message: str) -> RewardServiceError:
    """Client side: rebuild the typed error from a gRPC status code and details message."""
    return _BY_GRPC.get(code, ScoringFailed)(message or code.name)


def is_retryable(exc_or_status: BaseException | grpc.StatusCode | int) -> bool:
    """Whether retrying the same request may succeed.

    Accepts an exception (ours, a ``grpc.RpcError``, or any other), a ``grpc.StatusCode``,
    or an HTTP status code.
    """
    if isinstance(exc_or_status, grpc.StatusCode):
        return exc_or_status in _RETRYABLE_GRPC
    if isinstance(exc_or_status, bool):
        raise TypeError("is_retryable expects an exception or a status code, not a bool")
    if isinstance(exc_or_status, int):
        return exc_or_status in _RETRYABLE_HTTP
    return as_service_error(exc_or_status).retryable
