"""Score request bodies over HTTP: JSON (the documented default), the gRPC protobuf message, or
a multipart form of uploaded files.

``POST /v1/rewards/{name}/score`` and ``POST /v1/score`` read their body by ``Content-Type``:

- ``application/json`` (or none): the pydantic ``ScoreRequest`` / ``ScoreManyRequest``,
  images as base64 (files or ``raw_images``). Parsed by pydantic straight from the bytes.
- ``application/x-protobuf``: the serialized ``reward.v1.ScoreRequest`` /
  ``ScoreManyRequest`` of ``protos/reward/v1/reward.proto``, images as plain bytes. For HTTP
  clients that move large batches but cannot use gRPC: no base64 (a third smaller) and no JSON
  scan, which on a CPU cost ~0.1 s per 32 raw 512x512 images on each side. The message's
  ``reward`` field is ignored on the single-reward route (the URL names the reward).
- ``multipart/form-data``: ``image`` file fields (and ``prompt``, ``reward`` text fields), as
  ``curl -F image=@a.png`` sends them; read by :mod:`services.serving.multipart` into the same
  proto message.

All end as the same request object for ``protocol.request_images``; a protobuf body gets the
same checks as a gRPC call (in the router), a JSON body its pydantic validation on top.
Anything else is a 422 naming the accepted types. Responses are JSON either way.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from google.protobuf.message import DecodeError, Message
from pydantic import BaseModel, ValidationError

from services.errors import InvalidInput, from_validation_error
from services.images import ImageLimits
from services.serving.multipart import IMAGE, MULTIPART, PROMPT, REWARD, read_multipart

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
ACCEPTED = [JSON, PROTOBUF, MULTIPART]


def content_type(request: Request) -> str:
    """The request's media type, lower case, without parameters ("" when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_score_body(
    request: Request, model: type[BaseModel], message: type[Message], limits: ImageLimits
) -> BaseModel | Message:
    """The validated pydantic request (JSON) or the proto message (protobuf, multipart)."""
    kind = content_type(request)
    if kind == MULTIPART:
        return await read_multipart(request, message, limits)
    body = await request.body()
    if kind == PROTOBUF:
        try:
            return message.FromString(body)
        except (DecodeError, ValueError) as exc:
            name = message.DESCRIPTOR.full_name
            raise InvalidInput(f"body is not a valid {name} protobuf message ({exc})") from None
    if kind not in ("", JSON):
        raise InvalidInput(
            f"unsupported content-type {kind!r}; send {JSON}, {PROTOBUF} or {MULTIPART}",
            details={"content_type": kind, "accepted": ACCEPTED},
        )
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        if all(err["type"] != "json_invalid" for err in exc.errors()):
            raise from_validation_error(exc) from None
    return _validate_strict_json_fallback(body, model)


def _validate_strict_json_fallback(body: bytes, model: type[BaseModel]) -> BaseModel:
    """Second opinion of Python's json on a body pydantic's parser refused.

    Pydantic rejects JSON that Python accepts, such as a lone surrogate escape (``"\\ud800"``):
    parsed here, the request reaches the validators, whose error names the prompt and the
    character. A body neither parser reads is one ``InvalidInput`` saying what to send.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(
            f"invalid request body: not JSON ({exc}); send a UTF-8 encoded JSON object"
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def score_body_openapi(model: type[BaseModel], message: type[Message]) -> dict[str, Any]:
    """``openapi_extra`` of a score route: its JSON schema, the protobuf and multipart forms."""
    proto = f"serialized {message.DESCRIPTOR.full_name} (protos/reward/v1/reward.proto)"
    return {
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
                PROTOBUF: {"schema": {"type": "string", "format": "binary", "description": proto}},
                MULTIPART: {"schema": _multipart_schema(message)},
            },
        }
    }


def _multipart_schema(message: type[Message]) -> dict[str, Any]:
    """The form fields of a score route (see :mod:`services.serving.multipart`)."""
    properties: dict[str, Any] = {
        IMAGE: {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "minItems": 1,
            "description": "image files (PNG, JPEG, ...), one field per image",
        },
        # No "type": a form carries only text, so whatever a client serializes into a prompt
        # field is a prompt (declaring strings would make '{}' a schema violation we accept).
        PROMPT: {"description": "text fields: one prompt per image, in the same order, or none"},
    }
    required = [IMAGE]
    if "rewards" in message.DESCRIPTOR.fields_by_name:
        properties[REWARD] = {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 1,
            "description": "reward names, one field per reward",
        }
        required.append(REWARD)
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def install_openapi(app: FastAPI, request_models: list[type[BaseModel]]) -> None:
    """Make ``app.openapi()`` list ``request_models`` (read by hand, so FastAPI cannot see
    them) under ``components.schemas`` next to the ones it generates."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in request_models:
                js = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(js.pop("$defs", {}))
                components[model.__name__] = js
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
