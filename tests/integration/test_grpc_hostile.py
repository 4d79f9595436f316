"""Hostile input over gRPC: each case gets a definite status naming the problem, and the
service keeps serving (a good request succeeds right after every case).

Request-level problems are status codes; a bad image is an error for that image only (the call
succeeds and its neighbours are scored). Odd but valid image modes are scored, decoded by the
rules of docs/wire-protocol.md. Bad requests that test_serving_errors.py already sends (unknown
reward, zero images, prompt count mismatch, too many images) are not repeated here.
"""

from __future__ import annotations

import math
import os

import grpc
import numpy as np
import pytest

from services.images import encode_png
from services.proto import reward_pb2 as pb
from services.proto import reward_pb2_grpc
from tests.integration import hostile_inputs as hostile

pytestmark = pytest.mark.integration

TIMEOUT_S = 60
GOOD_PNG = encode_png(np.full((24, 24, 3), 90, dtype=np.uint8))
GOOD_REQUEST = pb.ScoreRequest(reward="aesthetic", images=[GOOD_PNG])


def _identity(data: bytes) -> bytes:
    return data


@pytest.fixture(scope="module")
def channel(reward_app):
    """One channel to the app's gRPC proxy for the whole module."""
    with grpc.insecure_channel(reward_app.grpc_target) as opened:
        yield opened


@pytest.fixture(scope="module")
def metadata(reward_app):
    """The metadata that routes a call to the reward app."""
    return [("application", reward_app.app_name)]


@pytest.fixture(scope="module")
def stub(channel):
    """The typed client."""
    return reward_pb2_grpc.RewardServiceStub(channel)


@pytest.fixture
def still_serving(stub, metadata):
    """After the test, a good request must still be scored."""
    yield
    reply = stub.Score(GOOD_REQUEST, metadata=metadata, timeout=TIMEOUT_S)
    assert reply.results[0].HasField("score") and math.isfinite(reply.results[0].score)


def _raw_call(channel, metadata, method: str, payload: bytes) -> grpc.RpcError:
    """Send ``payload`` as the request bytes of ``method``; return the error it must raise."""
    call = channel.unary_unary(
        f"/reward.v1.RewardService/{method}",
        request_serializer=_identity,
        response_deserializer=_identity,
    )
    with pytest.raises(grpc.RpcError) as caught:
        call(payload, metadata=metadata, timeout=TIMEOUT_S)
    return caught.value


def _prompted(prompt: str) -> bytes:
    return pb.ScoreRequest(
        reward="pickscore", images=[GOOD_PNG], prompts=[prompt]
    ).SerializeToString()


_SERIALIZED = GOOD_REQUEST.SerializeToString()
# (name, method, request bytes, words the details must contain)
MALFORMED = [
    ("garbage bytes", "Score", b"\xff\xfe\xfd garbage \x00\x01", "wire format was corrupt"),
    ("truncated mid-field", "Score", _SERIALIZED[:-10], "reward.v1.ScoreRequest"),
    ("invalid utf-8 in a prompt", "Score", _prompted("ab").replace(b"ab", b"\xff\xfe"), "utf-8"),
    ("surrogate in a prompt", "Score", _prompted("ab").replace(b"ab", b"\xed\xa0\x80"), "utf-8"),
    ("garbage to ScoreMany", "ScoreMany", b"\xff\xff\xff\xff", "reward.v1.ScoreManyRequest"),
    ("garbage to Health", "Health", b"\xff\xff\xff\xff", "reward.v1.HealthRequest"),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_protobuf_is_unknown_naming_the_parse_error(
    channel, metadata, still_serving, case
):
    # The proxy's grpc.aio server fails to deserialize before Serve or our code runs; grpc.aio
    # answers UNKNOWN "Unexpected <DecodeError>: Error parsing message with type '...'".
    _, method, payload, words = case
    error = _raw_call(channel, metadata, method, payload)
    assert error.code() == grpc.StatusCode.UNKNOWN
    assert "error parsing message" in error.details().lower()
    assert words.lower() in error.details().lower()


def test_unknown_method_is_unimplemented(channel, metadata, still_serving):
    error = _raw_call(channel, metadata, "Nope", b"")
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


def test_truncation_at_a_field_boundary_is_a_shorter_valid_request(
    channel, metadata, still_serving
):
    only_reward = pb.ScoreRequest(reward="aesthetic").SerializeToString()
    assert _SERIALIZED.startswith(only_reward)
    error = _raw_call(channel, metadata, "Score", only_reward)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at least one image" in error.details()


def test_empty_message_names_the_missing_reward(channel, metadata, still_serving):
    error = _raw_call(channel, metadata, "Score", b"")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "reward '' is not served" in error.details()


def test_oversized_message_is_resource_exhausted_by_the_proxy(stub, metadata, still_serving):
    # Serve's gRPC proxy takes its receive limit from RAY_SERVE_GRPC_MAX_MESSAGE_SIZE (default
    # 2 GiB - 1); conftest.py sets it to the HTTP body limit before Ray starts.
    limit = int(os.environ["RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"])
    assert limit <= 64 * 2**20, "set a test-sized limit before Ray starts (conftest.py)"
    request = pb.ScoreRequest(reward="aesthetic", images=[GOOD_PNG, b"\0" * (limit + 1)])
    with pytest.raises(grpc.RpcError) as caught:
        stub.Score(request, metadata=metadata, timeout=TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"larger than max ({request.ByteSize()} vs. {limit})" in caught.value.details()


BAD_IMAGES = hostile.bad_image_cases()


@pytest.mark.parametrize("case", BAD_IMAGES, ids=[c[0] for c in BAD_IMAGES])
def test_bad_image_is_an_error_for_that_image_only(stub, metadata, still_serving, case):
    _, data, words = case
    request = pb.ScoreRequest(reward="aesthetic", images=[GOOD_PNG, data, GOOD_PNG])
    reply = stub.Score(request, metadata=metadata, timeout=TIMEOUT_S)
    first, bad, last = reply.results
    assert first.HasField("score") and last.HasField("score")
    assert not bad.HasField("score")
    assert bad.error.startswith("image 1:") and words.lower() in bad.error.lower()


ODD_MODES = hostile.odd_mode_cases()


@pytest.mark.parametrize("case", ODD_MODES, ids=[c[0] for c in ODD_MODES])
def test_odd_image_modes_are_scored_as_their_documented_rgb(stub, metadata, still_serving, case):
    _, data, expected = case
    request = pb.ScoreRequest(reward="aesthetic", images=[data, encode_png(expected)])
    odd, reference = stub.Score(request, metadata=metadata, timeout=TIMEOUT_S).results
    assert odd.HasField("score") and math.isfinite(odd.score), odd.error
    assert odd.score == pytest.approx(reference.score, rel=1e-5, abs=1e-7)


def _raw(pixels: np.ndarray) -> pb.RawImage:
    height, width, channels = pixels.shape
    return pb.RawImage(height=height, width=width, channels=channels, data=pixels.tobytes())


RAW_PIXELS = hostile.raw_pixel_cases()


@pytest.mark.parametrize("case", RAW_PIXELS, ids=[c[0] for c in RAW_PIXELS])
def test_raw_gray_and_rgba_are_scored_as_their_documented_rgb(stub, metadata, case):
    _, pixels, expected = case
    request = pb.ScoreRequest(reward="aesthetic", raw_images=[_raw(pixels), _raw(expected)])
    raw, reference = stub.Score(request, metadata=metadata, timeout=TIMEOUT_S).results
    assert raw.HasField("score") and math.isfinite(raw.score), raw.error
    assert raw.score == pytest.approx(reference.score, rel=1e-5, abs=1e-7)


# (name, RawImage, words its error must contain); test_serving_errors.py sends short data
BAD_RAW = [
    ("raw bomb", pb.RawImage(height=60000, width=60000, channels=3, data=b"abc"), "maximum side"),
    ("raw 5000x5000", pb.RawImage(height=5000, width=5000, channels=1, data=b"a"), "25000000"),
    ("zero height", pb.RawImage(height=0, width=24, channels=3), "below the minimum side"),
    ("two channels", pb.RawImage(height=1, width=1, channels=2, data=b"ab"), "2 channels"),
    ("too much data", pb.RawImage(height=1, width=1, channels=1, data=b"ab"), "needs exactly 1"),
]


@pytest.mark.parametrize("case", BAD_RAW, ids=[c[0] for c in BAD_RAW])
def test_bad_raw_image_is_an_error_for_that_image_only(stub, metadata, still_serving, case):
    _, bad, words = case
    good = _raw(np.full((24, 24, 3), 90, dtype=np.uint8))
    request = pb.ScoreRequest(reward="aesthetic", raw_images=[good, bad, good])
    first, error, last = stub.Score(request, metadata=metadata, timeout=TIMEOUT_S).results
    assert first.HasField("score") and last.HasField("score")
    assert not error.HasField("score")
    assert error.error.startswith("image 1:") and words in error.error


@pytest.mark.parametrize(
    "prompt",
    ["x" * 2001, "x" * 1_000_000],
    ids=["2001 chars", "1M chars"],
)
def test_absurdly_long_prompt_is_resource_exhausted_naming_it(
    stub, metadata, still_serving, prompt
):
    request = pb.ScoreRequest(reward="pickscore", images=[GOOD_PNG], prompts=[prompt])
    with pytest.raises(grpc.RpcError) as caught:
        stub.Score(request, metadata=metadata, timeout=TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"prompt 0: {len(prompt)} characters, over the limit of 2000" in caught.value.details()


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", "\x85"], ids=["NUL", "ESC", "DEL", "NEL"])
def test_control_character_in_prompt_is_invalid_argument_naming_it(
    stub, metadata, still_serving, char
):
    prompts = ["a fine prompt", f"a cat{char}on a mat"]
    request = pb.ScoreRequest(reward="pickscore", images=[GOOD_PNG] * 2, prompts=prompts)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Score(request, metadata=metadata, timeout=TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details()
    assert f"prompt 1: forbidden character U+{ord(char):04X} at position 5" in details


@pytest.mark.parametrize(
    "prompt",
    [
        "x" * 2000,
        "一只猫坐在垫子上 🐱🌧️",
        "emoji family 👨‍👩‍👧 and flags 🇯🇵",
        "مرحبا بالعالم \u202e reversed",
        "combining e\u0301 and tab\tnewline\ncarriage\r",
    ],
    ids=["2000 chars", "cjk emoji", "zwj emoji", "rtl override", "combining and whitespace"],
)
def test_long_or_unicode_prompt_is_scored(stub, metadata, prompt):
    request = pb.ScoreRequest(reward="pickscore", images=[GOOD_PNG], prompts=[prompt])
    reply = stub.Score(request, metadata=metadata, timeout=TIMEOUT_S)
    assert reply.results[0].HasField("score") and math.isfinite(reply.results[0].score)
