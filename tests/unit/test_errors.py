"""The error hierarchy and its one mapping to HTTP and gRPC, both directions."""

import grpc
import pytest
from pydantic import BaseModel, ValidationError, field_validator

from services import errors
from services.errors import (
    ERROR_CLASSES,
    InvalidInput,
    PayloadTooLarge,
    RewardServiceError,
    ScoringFailed,
    ScoringTimeout,
    Unauthenticated,
    Unavailable,
    UnknownReward,
)

TABLE = [
    # class, code, HTTP, gRPC, retryable
    (InvalidInput, "invalid_input", 422, grpc.StatusCode.INVALID_ARGUMENT, False),
    (PayloadTooLarge, "payload_too_large", 413, grpc.StatusCode.RESOURCE_EXHAUSTED, False),
    (UnknownReward, "unknown_reward", 404, grpc.StatusCode.NOT_FOUND, False),
    (Unauthenticated, "unauthenticated", 401, grpc.StatusCode.UNAUTHENTICATED, False),
    (Unavailable, "unavailable", 503, grpc.StatusCode.UNAVAILABLE, True),
    (ScoringTimeout, "timeout", 504, grpc.StatusCode.DEADLINE_EXCEEDED, True),
    (ScoringFailed, "scoring_failed", 500, grpc.StatusCode.INTERNAL, False),
]


@pytest.mark.parametrize(("cls", "code", "http", "grpc_code", "retry"), TABLE)
def test_mapping_table(cls, code, http, grpc_code, retry):
    exc = cls("something went wrong", details={"index": 3})
    assert isinstance(exc, RewardServiceError)
    assert to_http_ok(exc) == (http, code, "something went wrong", {"index": 3})
    assert errors.to_grpc_status(exc) == (grpc_code, "something went wrong")
    assert errors.is_retryable(exc) is retry
    assert errors.is_retryable(http) is retry
    assert errors.is_retryable(grpc_code) is retry


def to_http_ok(exc):
    status, body = errors.to_http(exc)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    err = body["error"]
    return status, err["code"], err["message"], err["details"]


def test_table_covers_every_class_and_codes_are_unique():
    assert {row[0] for row in TABLE} == set(ERROR_CLASSES)
    for attr in ("code", "http_status", "grpc_status"):
        values = [getattr(cls, attr) for cls in ERROR_CLASSES]
        assert len(values) == len(set(values)), f"{attr} is not one-to-one"


@pytest.mark.parametrize(("cls", "code", "http", "grpc_code", "retry"), TABLE)
def test_client_side_round_trip(cls, code, http, grpc_code, retry):
    exc = cls("boom", details={"k": 1})
    status, body = errors.to_http(exc)
    back = errors.from_http(status, body)
    assert type(back) is cls and back.message == "boom" and back.details == {"k": 1}
    back = errors.from_grpc(*errors.to_grpc_status(exc))
    assert type(back) is cls and back.message == "boom"


def test_from_http_without_our_body_uses_the_status():
    assert type(errors.from_http(503, "<html>busy</html>")) is Unavailable
    assert type(errors.from_http(502, None)) is Unavailable
    assert type(errors.from_http(429, {})) is Unavailable
    assert type(errors.from_http(400, {"detail": "bad"})) is InvalidInput
    assert type(errors.from_http(418, {})) is InvalidInput
    assert type(errors.from_http(501, {})) is ScoringFailed
    assert type(errors.from_http(404, {"error": {"code": "nope", "message": "x"}})) is UnknownReward


def test_from_grpc_unknown_code_is_internal():
    exc = errors.from_grpc(grpc.StatusCode.UNIMPLEMENTED, "")
    assert type(exc) is ScoringFailed and exc.message == "UNIMPLEMENTED"


def test_invalid_input_is_a_value_error():
    assert issubclass(InvalidInput, ValueError)
    assert issubclass(PayloadTooLarge, InvalidInput)


def test_foreign_exceptions_are_normalized_without_leaking_messages():
    status, body = errors.to_http(RuntimeError("CUDA error at /secret/path.py:12"))
    assert status == 500 and body["error"]["code"] == "scoring_failed"
    assert "secret" not in body["error"]["message"]
    assert "RuntimeError" in body["error"]["message"]
    assert errors.to_grpc_status(TimeoutError())[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert errors.to_grpc_status(ConnectionResetError())[0] == grpc.StatusCode.UNAVAILABLE
    assert errors.is_retryable(TimeoutError()) and errors.is_retryable(ConnectionError())
    assert not errors.is_retryable(KeyError("x"))


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code):
        self._code = code

    def code(self):
        return self._code

    def details(self):
        return "from upstream"


def test_rpc_errors_map_by_their_code():
    assert errors.is_retryable(_FakeRpcError(grpc.StatusCode.UNAVAILABLE))
    assert not errors.is_retryable(_FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT))
    exc = errors.as_service_error(_FakeRpcError(grpc.StatusCode.NOT_FOUND))
    assert type(exc) is UnknownReward and exc.message == "from upstream"


def test_is_retryable_rejects_bool():
    with pytest.raises(TypeError):
        errors.is_retryable(True)


class _Model(BaseModel):
    n: int
    name: str

    @field_validator("name")
    @classmethod
    def _check(cls, value):
        if value == "big":
            raise PayloadTooLarge("name: too big")
        if value == "bad":
            raise InvalidInput("name: not acceptable")
        return value


def _validation_error(**data) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        _Model(**data)
    return info.value


def test_validation_error_becomes_invalid_input_naming_fields():
    exc = errors.from_validation_error(_validation_error(n="x", name="bad"))
    assert type(exc) is InvalidInput
    fields = {p["field"]: p["message"] for p in exc.details["errors"]}
    assert set(fields) == {"n", "name"}
    assert fields["name"] == "name: not acceptable"  # our message, not "Value error, ..."
    assert exc.message.startswith("invalid request: n: ")
    assert errors.to_http(exc)[0] == 422


def test_bare_validation_error_is_a_server_fault():
    """It may come from building a response; only the ingress knows it was the request."""
    assert errors.to_http(_validation_error(n=1, name="bad"))[0] == 500


def test_size_errors_raised_in_validators_keep_their_class():
    exc = errors.from_validation_error(_validation_error(n=1, name="big"))
    assert type(exc) is PayloadTooLarge
    assert errors.to_http(exc)[0] == 413


def test_validation_errors_as_plain_dicts_are_accepted():
    """FastAPI's RequestValidationError gives a list of dicts, not a ValidationError."""
    items = [{"loc": ("body", "images"), "msg": "Field required", "type": "missing"}]
    exc = errors.from_validation_error(items)
    assert exc.message == "invalid request: body.images: Field required"
