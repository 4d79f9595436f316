"""Pydantic request/response models of the reward services' HTTP API: the twin of the proto.

Endpoints (see docs/wire-protocol.md):

- ``POST /v1/rewards/{name}/score``  ``ScoreRequest`` -> ``ScoreResponse``
- ``POST /v1/score``                 ``ScoreManyRequest`` -> ``ScoreManyResponse``
- ``GET  /v1/rewards``               ``RewardsListResponse``
- ``GET  /healthz``                   ``HealthResponse``
- any error                          ``ErrorResponse`` (status from services/errors.py)

``PROTO_TWINS`` pairs each model with its message in ``reward.v1``; a unit test checks that
their fields agree. Intended differences: HTTP images (and raw image data) are base64 strings
where the proto has bytes, the HTTP ``ScoreRequest`` takes the reward name from the URL path,
and an absent text (``None``) is the proto's empty string. ``to_proto``/``from_proto``
convert along that table, so servers and clients never copy fields by hand.

Requests reject unknown fields; responses ignore them, so an older client can read a newer
server's answers. Request validators reuse services/images.py (with its default limits) and
raise its ``InvalidInput``, so ``errors.from_validation_error`` reports them field by field.
A request carries ``images`` (encoded files) or ``raw_images`` (uncompressed pixels), not both;
``request_images`` turns either form, HTTP or proto, into the items the deployments decode.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from services.errors import InvalidInput
from services.images import (
    ImageLimits,
    RawPixels,
    b64decode_strict,
    check_image_count,
    validate_prompts,
)
from services.proto import reward_pb2 as pb

_IMAGES_DOC = (
    "Base64-encoded image files (PNG, JPEG, WebP, GIF, BMP, TIFF), standard alphabet with "
    "padding; a data:<mime type>;base64, prefix is allowed."
)
_PROMPTS_DOC = "One prompt per image, or omitted (null or []) for rewards that read no prompt."
_MODEL_DOC = (
    "What scored, in one line: a checkpoint or engine, a closed-form rule, or a test model; "
    "a test model's description starts with 'random-weight' (its scores mean nothing)."
)
_VERSION_DOC = (
    "The version that scored every image of this answer: a fingerprint of the reward's name "
    "and whole config (12 hex digits); it changes with any parameter."
)
_RAW_DOC = "Uncompressed images (no encode or decode cost); send these or `images`, not both."
_NO_SIZE_LIMIT = ImageLimits(max_bytes=2**62)  # raw data: bounded by pixels, in from_raw
# the proto's uint32 (meaning is checked per image); strict: JSON false or "3" is no integer
_UINT32 = {"ge": 0, "le": 2**32 - 1, "strict": True}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RawImage(_Request):
    """One uncompressed image: uint8 pixels, row-major, channel last."""

    height: int = Field(description="rows", **_UINT32)
    width: int = Field(description="columns", **_UINT32)
    channels: int = Field(description="1 (gray), 3 (RGB) or 4 (RGBA over white)", **_UINT32)
    data: str = Field(description="base64 of exactly height * width * channels bytes")


class _ImageBatch(_Request):
    """Images (encoded or raw) plus optional prompts, validated against the default limits.

    ``raw_images`` is declared first so that the later validators can see it.
    """

    raw_images: list[RawImage] = Field(default_factory=list, description=_RAW_DOC)
    images: list[str] = Field(default_factory=list, description=_IMAGES_DOC, validate_default=True)
    prompts: list[str] | None = Field(None, description=_PROMPTS_DOC)

    @field_validator("raw_images")
    @classmethod
    def _count_raw_images(cls, raw_images: list[RawImage]) -> list[RawImage]:
        if raw_images:
            check_image_count(len(raw_images))
        return raw_images

    @field_validator("images")
    @classmethod
    def _count_images(cls, images: list[str], info: ValidationInfo) -> list[str]:
        raw = info.data.get("raw_images")
        if images and raw:
            raise InvalidInput("send images or raw_images, not both")
        if raw is None or not raw:  # raw_images failed or is empty: images must carry the batch
            check_image_count(len(images))
        return images

    @field_validator("prompts")
    @classmethod
    def _check_prompts(cls, prompts: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if "images" not in info.data or "raw_images" not in info.data:
            return prompts  # images already failed; do not add a second error
        return validate_prompts(prompts, len(info.data["images"] or info.data["raw_images"]))


class ScoreRequest(_ImageBatch):
    """Body of ``POST /v1/rewards/{name}/score``: score a batch with one reward."""


class ScoreManyRequest(_ImageBatch):
    """Body of ``POST /v1/score``: score the same batch with several rewards."""

    rewards: list[str] = Field(min_length=1, description="Reward names, no duplicates.")

    @field_validator("rewards")
    @classmethod
    def _unique_names(cls, rewards: list[str]) -> list[str]:
        if any(not name for name in rewards):
            raise InvalidInput("reward names must be non-empty")
        repeated = sorted({name for name in rewards if rewards.count(name) > 1})
        if repeated:
            raise InvalidInput(f"reward names listed more than once: {', '.join(repeated)}")
        return rewards


class ItemResult(_Response):
    """The outcome for one image: a score, or ``None`` with an optional reason."""

    score: float | None = Field(None, allow_inf_nan=False, description="None: not scored")
    error: str | None = Field(None, description="why there is no score, when known")

    @classmethod
    def from_score(cls, value: float | None) -> ItemResult:
        """Wrap a reward's output; a NaN or infinite score becomes ``None`` with a reason."""
        if value is None:
            return cls()
        value = float(value)
        if not math.isfinite(value):
            return cls(error=f"the reward returned a non-finite score ({value})")
        return cls(score=value)


def scores_to_results(scores: Sequence[float | None]) -> list[ItemResult]:
    """One ``ItemResult`` per score, in order (see ``ItemResult.from_score``)."""
    return [ItemResult.from_score(value) for value in scores]


class ScoreResponse(_Response):
    """Answer to ``ScoreRequest``: one result per request image, in request order."""

    reward: str
    results: list[ItemResult]
    model: str | None = Field(None, description=_MODEL_DOC)
    version: str | None = Field(None, description=_VERSION_DOC)

    def scores(self) -> list[float | None]:
        """The scores alone, ``None`` where an image was not scored."""
        return [item.score for item in self.results]


class RewardResult(_Response):
    """One reward's part of a ``ScoreManyResponse``."""

    reward: str
    results: list[ItemResult] = Field(default_factory=list, description="empty if error is set")
    error: str | None = Field(None, description="set when this reward failed as a whole")
    model: str | None = Field(None, description=_MODEL_DOC + " None if error is set.")
    version: str | None = Field(None, description=_VERSION_DOC + " None if error is set.")


class ScoreManyResponse(_Response):
    """Answer to ``ScoreManyRequest``: one entry per requested reward, in request order."""

    results: list[RewardResult]

    def by_reward(self) -> dict[str, RewardResult]:
        """The results keyed by reward name."""
        return {entry.reward: entry for entry in self.results}


class RewardHealth(_Response):
    """Readiness of one served reward."""

    reward: str
    ready: bool
    error: str | None = None


class HealthResponse(_Response):
    """Body of ``GET /healthz``: ready when every reward is."""

    ready: bool
    rewards: list[RewardHealth]


class RewardInfo(_Response):
    """One entry of ``GET /v1/rewards`` (HTTP only: gRPC callers know their reward names)."""

    name: str
    needs_prompt: bool
    description: str = ""
    model: str | None = Field(None, description=_MODEL_DOC)
    version: str | None = Field(None, description=_VERSION_DOC)
    config: dict[str, Any] = Field(default_factory=dict, description="the reward's Config")
    ready: bool


class RewardsListResponse(_Response):
    """Body of ``GET /v1/rewards``."""

    rewards: list[RewardInfo]


class ErrorBody(_Response):
    """The ``error`` object of every HTTP error response (see services/errors.py)."""

    code: str = Field(description="machine-readable, e.g. 'invalid_input'")
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(_Response):
    """Body of every HTTP error response; gRPC uses status codes instead."""

    error: ErrorBody


PROTO_TWINS: dict[type[BaseModel], type[Message]] = {
    RawImage: pb.RawImage,
    ScoreRequest: pb.ScoreRequest,
    ScoreManyRequest: pb.ScoreManyRequest,
    ItemResult: pb.ItemResult,
    ScoreResponse: pb.ScoreResponse,
    RewardResult: pb.RewardResult,
    ScoreManyResponse: pb.ScoreManyResponse,
    RewardHealth: pb.RewardHealth,
    HealthResponse: pb.HealthResponse,
}
_MODEL_OF = {message: model for model, message in PROTO_TWINS.items()}
BASE64_FIELDS = frozenset({"images", "data"})  # base64 str over HTTP, bytes in the proto


def raw_request_json(raw_images: Sequence[RawPixels], prompts: Sequence[str] | None) -> bytes:
    """The JSON body of a ``ScoreRequest`` carrying ``raw_images``, built directly as bytes.

    ``json.dumps`` scans every character of its strings for escaping, which costs ~3 ms per
    MB; base64 needs no escaping, so the image data is spliced in as is (a 512x512 batch of
    32 is a 34 MB body: ~100 ms saved on the client per call).
    """
    items = []
    for raw in raw_images:
        d = raw.to_json()
        head = f'{{"height":{int(d["height"])},"width":{int(d["width"])},'
        items.append(f'{head}"channels":{int(d["channels"])},"data":"{d["data"]}"}}')
    tail = json.dumps(list(prompts) if prompts is not None else None)
    return f'{{"raw_images":[{",".join(items)}],"prompts":{tail}}}'.encode("ascii")


def request_images(request: _ImageBatch | pb.ScoreRequest | pb.ScoreManyRequest) -> list[Any]:
    """The request's images as the deployments take them: encoded files (base64 str or bytes)
    or ``RawPixels``; raises ``InvalidInput`` if both forms are present."""
    encoded, raw = list(request.images), list(request.raw_images)
    if encoded and raw:
        raise InvalidInput("send images or raw_images, not both")
    return encoded or [RawPixels(r.height, r.width, r.channels, r.data) for r in raw]


def to_proto(model: BaseModel, **extra: Any) -> Message:
    """Convert a model to its proto twin; ``extra`` sets proto-only fields (e.g. ``reward``).

    ``None`` becomes the proto default (absent optional, "" or []); base64 images are decoded.
    """
    fields = dict(extra)
    for name in type(model).model_fields:
        value = getattr(model, name)
        if value is None:
            continue
        if name in BASE64_FIELDS and isinstance(value, str):
            value = b64decode_strict(value, 0, _NO_SIZE_LIMIT)
        elif name in BASE64_FIELDS:
            value = [b64decode_strict(text, i) for i, text in enumerate(value)]
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            value = [to_proto(item) for item in value]
        fields[name] = value
    return PROTO_TWINS[type(model)](**fields)


def from_proto(message: Message, model: type[BaseModel] | None = None) -> BaseModel:
    """Convert a proto message to its pydantic twin (validated); proto-only fields are dropped.

    Meant for responses (the gRPC client's typed answer) and tests. A gRPC server should pass
    a request's bytes straight to ``images.decode_batch``: converting would re-encode them.
    """
    model = model or _MODEL_OF[type(message)]
    data: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        if field.name not in model.model_fields:
            continue
        value = getattr(message, field.name)
        if field.has_presence and not field.is_repeated and not message.HasField(field.name):
            value = None
        elif field.name in BASE64_FIELDS and not field.is_repeated:
            value = base64.b64encode(value).decode("ascii")
        elif field.name in BASE64_FIELDS:
            value = [base64.b64encode(raw).decode("ascii") for raw in value]
        elif field.is_repeated and field.message_type is not None:
            value = [from_proto(item) for item in value]
        elif field.is_repeated:
            value = list(value)
        elif value == "" and model.model_fields[field.name].default is None:
            value = None
        data[field.name] = value
    return model.model_validate(data)
