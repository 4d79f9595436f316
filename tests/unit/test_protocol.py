"""HTTP schema validation, its parity with the proto, conversions, and fresh generated code."""

import inspect
import re

import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from services import errors, protocol
from services.errors import InvalidInput, PayloadTooLarge
from services.images import encode_base64_png, encode_png
from services.proto import generate
from services.proto import reward_pb2 as pb
from services.proto import reward_pb2_grpc as pb_grpc
from services.protocol import (
    BASE64_FIELDS,
    PROTO_TWINS,
    ErrorResponse,
    HealthResponse,
    ItemResult,
    RewardHealth,
    RewardResult,
    ScoreManyRequest,
    ScoreManyResponse,
    ScoreRequest,
    ScoreResponse,
    from_proto,
    scores_to_results,
    to_proto,
)

IMAGE = encode_base64_png(np.full((4, 5, 3), 7, np.uint8))

# Intended differences between the HTTP models and the proto (see services/protocol.py).
PROTO_ONLY_FIELDS = {"ScoreRequest": {"reward"}}  # HTTP carries it in the URL path
HTTP_ONLY_MODELS = {"RewardInfo", "RewardsListResponse", "ErrorBody", "ErrorResponse"}
PROTO_ONLY_MESSAGES = {"HealthRequest"}  # no fields; HTTP uses a bare GET


def invalid(model, **data) -> errors.InvalidInput:
    with pytest.raises(ValidationError) as info:
        model(**data)
    return errors.from_validation_error(info.value)


# --- validation ------------------------------------------------------------------------------


def test_valid_requests():
    req = ScoreRequest(images=[IMAGE, IMAGE], prompts=["a", "b"])
    assert req.prompts == ["a", "b"]
    assert ScoreRequest(images=[IMAGE]).prompts is None
    assert ScoreRequest(images=[IMAGE], prompts=[]).prompts is None
    many = ScoreManyRequest.model_validate_json(f'{{"rewards": ["ocr"], "images": ["{IMAGE}"]}}')
    assert many.rewards == ["ocr"]


def test_unknown_fields_are_rejected():
    exc = invalid(ScoreRequest, images=[IMAGE], prompt=["a"])
    assert "prompt: Extra inputs are not permitted" in exc.message


def test_image_counts():
    assert "images: at least one image is required" in invalid(ScoreRequest, images=[]).message
    exc = invalid(ScoreRequest, images=[IMAGE] * 257)
    assert isinstance(exc, PayloadTooLarge) and "257 images" in exc.message
    assert errors.to_http(exc)[0] == 413


def test_prompt_count_names_both_counts():
    exc = invalid(ScoreRequest, images=[IMAGE] * 3, prompts=["a", "b"])
    assert "prompts: got 2 prompts for 3 images" in exc.message
    message = "got 2 prompts for 3 images; send exactly one prompt per image, or none"
    assert exc.details["errors"] == [{"field": "prompts", "message": message}]


def test_bad_prompts():
    exc = invalid(ScoreRequest, images=[IMAGE], prompts=["a\x00"])
    assert type(exc) is InvalidInput and "prompt 0: forbidden character U+0000" in exc.message
    assert isinstance(invalid(ScoreRequest, images=[IMAGE], prompts=["x" * 5000]), PayloadTooLarge)
    assert "prompts.0" in invalid(ScoreRequest, images=[IMAGE], prompts=[3]).message


def test_reward_names():
    assert "rewards" in invalid(ScoreManyRequest, rewards=[], images=[IMAGE]).message
    exc = invalid(ScoreManyRequest, rewards=["ocr", "clip", "ocr"], images=[IMAGE])
    assert "listed more than once: ocr" in exc.message
    assert "non-empty" in invalid(ScoreManyRequest, rewards=[""], images=[IMAGE]).message


def test_item_results():
    with pytest.raises(ValidationError):
        ItemResult(score=float("nan"))
    results = scores_to_results([np.float32(0.5), None, float("inf"), 0.0])
    assert [r.score for r in results] == [0.5, None, None, 0.0]
    assert results[2].error and "non-finite" in results[2].error
    assert type(results[0].score) is float
    assert ScoreResponse(reward="ocr", results=results).scores() == [0.5, None, None, 0.0]


def test_responses_ignore_unknown_fields_and_error_bodies_parse():
    resp = ScoreResponse.model_validate({"reward": "ocr", "results": [], "new_field": 1})
    assert resp.reward == "ocr"
    status, body = errors.to_http(errors.UnknownReward("no reward 'x'", details={"known": []}))
    parsed = ErrorResponse.model_validate(body)
    assert (status, parsed.error.code, parsed.error.details) == (
        404,
        "unknown_reward",
        {"known": []},
    )


def test_by_reward():
    resp = ScoreManyResponse(results=[RewardResult(reward="a"), RewardResult(reward="b")])
    assert list(resp.by_reward()) == ["a", "b"]


# --- parity with the proto -------------------------------------------------------------------


def _expected_annotations(field: FieldDescriptor, message_name: str) -> set:
    """The pydantic annotations that may twin a proto field."""
    if field.message_type is not None:
        twins = [m for m, msg in PROTO_TWINS.items() if msg.DESCRIPTOR is field.message_type]
        assert twins, f"{message_name}.{field.name}: message {field.message_type.name} has no twin"
        return {list[twins[0]]} if field.is_repeated else {twins[0], twins[0] | None}
    if field.type == FieldDescriptor.TYPE_BYTES:
        assert field.name in BASE64_FIELDS, f"{message_name}.{field.name}: bytes without base64"
        scalar = str
    else:
        scalar = {
            FieldDescriptor.TYPE_STRING: str,
            FieldDescriptor.TYPE_DOUBLE: float,
            FieldDescriptor.TYPE_BOOL: bool,
            FieldDescriptor.TYPE_UINT32: int,
        }[field.type]
    if field.is_repeated:
        return {list[scalar], list[scalar] | None}
    if field.has_presence:
        return {scalar | None}
    return {scalar, scalar | None} if scalar is str else {scalar}


@pytest.mark.parametrize("model", list(PROTO_TWINS), ids=lambda m: m.__name__)
def test_model_fields_match_proto_fields(model):
    message = PROTO_TWINS[model]
    assert message.DESCRIPTOR.name == model.__name__
    proto_fields = {f.name: f for f in message.DESCRIPTOR.fields}
    expected = set(proto_fields) - PROTO_ONLY_FIELDS.get(model.__name__, set())
    assert set(model.model_fields) == expected
    for name in expected:
        annotation = model.model_fields[name].annotation
        allowed = _expected_annotations(proto_fields[name], model.__name__)
        assert annotation in allowed, f"{model.__name__}.{name}: {annotation} vs {allowed}"


def test_every_model_and_message_is_paired_or_listed():
    models = {
        name
        for name, obj in vars(protocol).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseModel)
        and not name.startswith("_")
        and obj.__module__ == protocol.__name__
    }
    assert models == {m.__name__ for m in PROTO_TWINS} | HTTP_ONLY_MODELS
    messages = set(pb.DESCRIPTOR.message_types_by_name)
    assert messages == {m.DESCRIPTOR.name for m in PROTO_TWINS.values()} | PROTO_ONLY_MESSAGES


def test_service_methods_use_twinned_messages():
    service = pb.DESCRIPTOR.services_by_name["RewardService"]
    methods = {m.name: (m.input_type.name, m.output_type.name) for m in service.methods}
    assert methods == {
        "Score": ("ScoreRequest", "ScoreResponse"),
        "ScoreMany": ("ScoreManyRequest", "ScoreManyResponse"),
        "Health": ("HealthRequest", "HealthResponse"),
    }
    assert service.full_name == "reward.v1.RewardService"
    assert callable(pb_grpc.add_RewardServiceServicer_to_server)
    assert pb.ScoreRequest.__module__ == "services.proto.reward_pb2"


# --- conversions -----------------------------------------------------------------------------


def _wire(message):
    return type(message).FromString(message.SerializeToString())


def test_request_round_trip():
    req = ScoreManyRequest(rewards=["ocr", "clip"], images=[IMAGE], prompts=["a"])
    message = _wire(to_proto(req))
    assert message.images[0] == encode_png(np.full((4, 5, 3), 7, np.uint8))
    assert from_proto(message) == req
    single = to_proto(ScoreRequest(images=[IMAGE]), reward="ocr")
    assert single.reward == "ocr" and list(single.prompts) == []
    assert from_proto(_wire(single)) == ScoreRequest(images=[IMAGE])


def test_zero_score_is_not_confused_with_no_score():
    message = _wire(to_proto(ItemResult(score=0.0)))
    assert message.HasField("score") and message.score == 0.0
    assert from_proto(message) == ItemResult(score=0.0)
    message = _wire(to_proto(ItemResult(error="no text found")))
    assert not message.HasField("score")
    assert from_proto(message) == ItemResult(score=None, error="no text found")


def test_response_round_trips():
    health = HealthResponse(
        ready=False,
        rewards=[
            RewardHealth(reward="a", ready=True),
            RewardHealth(reward="b", ready=False, error="x"),
        ],
    )
    many = ScoreManyResponse(
        results=[
            RewardResult(reward="a", results=scores_to_results([1.0, None])),
            RewardResult(reward="b", error="unavailable"),
        ]
    )
    for model in (health, many, ScoreResponse(reward="a", results=[], model=None)):
        assert from_proto(_wire(to_proto(model))) == model


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False))),
    model=st.one_of(st.none(), st.text(min_size=1)),
)
def test_score_response_round_trip_property(scores, model):
    resp = ScoreResponse(reward="r", results=scores_to_results(scores), model=model)
    assert from_proto(_wire(to_proto(resp))) == resp


def test_bad_base64_fails_conversion_with_item_index():
    req = ScoreRequest.model_construct(images=[IMAGE, "%%%"], prompts=None)
    with pytest.raises(InvalidInput, match="image 1: not a valid base64 string"):
        to_proto(req)


# --- generated code is committed and fresh ---------------------------------------------------


def _tool_versions(text: str) -> list[str]:
    return re.findall(r"Protobuf Python Version: (\S+)|GRPC_GENERATED_VERSION = '([^']+)'", text)


def _descriptor(text: str) -> str:
    return re.search(r"AddSerializedFile\((b'.*')\)", text).group(1)


def test_generated_code_is_up_to_date(tmp_path):
    written = generate.generate(tmp_path)
    assert [p.name for p in written] == list(generate.GENERATED_FILES)
    fresh = {path.name: path.read_text() for path in written}
    for name in fresh:
        assert (generate.PACKAGE_DIR / name).exists(), f"{name} missing: run `make proto`"
    committed = {name: (generate.PACKAGE_DIR / name).read_text() for name in fresh}
    stale = "is stale: run `python -m services.proto.generate` (`make proto`) and commit"
    if all(_tool_versions(committed[n]) == _tool_versions(fresh[n]) for n in fresh):
        for name in fresh:
            assert committed[name] == fresh[name], f"{name} {stale}"
    else:  # another grpcio-tools here: compare only what the .proto decides
        old, new = committed["reward_pb2.py"], fresh["reward_pb2.py"]
        assert _descriptor(old) == _descriptor(new), f"reward_pb2.py {stale}"
