"""Uncompressed ``raw_images``: decoding rules, request validation and proto conversion."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services import errors
from services.errors import InvalidInput, PayloadTooLarge
from services.images import (
    ImageLimits,
    RawPixels,
    decode_bytes,
    decode_image,
    encode_png,
    from_raw,
)
from services.proto import reward_pb2 as pb
from services.protocol import (
    ScoreManyRequest,
    ScoreRequest,
    from_proto,
    request_images,
    to_proto,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def _validation_error(**data) -> errors.InvalidInput:
    with pytest.raises(ValidationError) as info:
        ScoreRequest(**data)
    return errors.from_validation_error(info.value)


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (5, 7, 3), (5, 7, 4)])
def test_raw_pixels_decode_like_the_same_png(shape):
    array = RNG.integers(0, 256, shape, dtype=np.uint8)
    raw = RawPixels.of(array)
    assert (raw.height, raw.width) == (5, 7)
    assert raw.channels == (shape[2] if len(shape) == 3 else 1)
    from_png = decode_bytes(encode_png(array))
    assert np.array_equal(decode_image(raw), from_png)
    as_json = RawPixels(**raw.to_json())  # base64 data, as over HTTP
    assert isinstance(as_json.data, str)
    assert np.array_equal(decode_image(as_json), from_png)


def test_raw_rgb_is_not_copied_after_the_transfer():
    raw = RawPixels.of(RGB)
    out = from_raw(raw)
    assert np.array_equal(out, RGB) and not out.flags.writeable  # a view of the bytes


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        (RawPixels(5, 7, 2, b"\0" * 70), InvalidInput, "image 0: 2 channels"),
        (RawPixels(5, 7, 3, b"\0" * 104), InvalidInput, "has 104 bytes; [5, 7, 3] uint8 needs"),
        (RawPixels(5, 7, 3, b"\0" * 106), InvalidInput, "needs exactly 105"),
        (RawPixels(5, 7, 3, "AAAA"), InvalidInput, "4 base64 characters; [5, 7, 3] needs 140"),
        (RawPixels(5, 7, 3, "!" * 140), InvalidInput, "not a valid base64 string"),
        (RawPixels(0, 7, 3, b""), InvalidInput, "below the minimum side"),
        (RawPixels(5, 7, 3, 12), InvalidInput, "raw data must be bytes, got int"),
        (RawPixels(9000, 9000, 3, b""), PayloadTooLarge, "over the maximum side"),
    ],
)
def test_bad_raw_pixels_name_the_problem(raw, error, message):
    with pytest.raises(error) as info:
        from_raw(raw)
    assert message in info.value.message


def test_size_limits_are_checked_before_the_data():
    limits = ImageLimits(max_pixels=20)
    with pytest.raises(PayloadTooLarge, match="7x5 = 35 pixels"):
        from_raw(RawPixels(5, 7, 3, "not even base64"), 0, limits)


def test_requests_take_images_or_raw_images_not_both_nor_neither():
    raw = RawPixels.of(RGB).to_json()
    req = ScoreRequest(raw_images=[raw, raw], prompts=["a", "b"])
    assert [type(item) for item in request_images(req)] == [RawPixels, RawPixels]
    assert (
        "images: send images or raw_images, not both"
        in _validation_error(images=["AAAA"], raw_images=[raw]).message
    )
    assert "at least one image is required" in _validation_error().message
    assert (
        "got 1 prompts for 2 images"
        in _validation_error(raw_images=[raw, raw], prompts=["a"]).message
    )
    too_many = _validation_error(raw_images=[raw] * 257)
    assert isinstance(too_many, PayloadTooLarge)
    assert "raw_images" in _validation_error(raw_images=[{**raw, "height": -1}]).message


def test_proto_requests_convert_both_ways():
    raw = RawPixels.of(RGB).to_json()
    req = ScoreManyRequest(rewards=["ocr"], raw_images=[raw], prompts=["a"])
    message = pb.ScoreManyRequest.FromString(to_proto(req).SerializeToString())
    assert message.raw_images[0].data == RGB.tobytes()
    assert from_proto(message) == req
    (item,) = request_images(message)
    assert isinstance(item.data, bytes) and np.array_equal(decode_image(item), RGB)
    both = pb.ScoreRequest(images=[b"x"], raw_images=[message.raw_images[0]])
    with pytest.raises(InvalidInput, match="not both"):
        request_images(both)


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    channels=st.sampled_from([1, 3, 4]),
    seed=st.integers(0, 2**16),
)
def test_raw_round_trip_property(height, width, channels, seed):
    array = np.random.default_rng(seed).integers(0, 256, (height, width, channels), np.uint8)
    raw = RawPixels.of(array)
    assert np.array_equal(decode_image(raw), decode_image(array))
    assert np.array_equal(decode_image(RawPixels(**raw.to_json())), decode_image(array))


@pytest.mark.parametrize("prompts", [None, ['a "quoted" prompt', "ünï\\code\n"]])
def test_raw_request_json_is_the_json_of_the_same_request(prompts):
    import json

    from services.protocol import raw_request_json

    raws = [RawPixels.of(RGB), RawPixels.of(RGB[:, :, :1])]
    body = raw_request_json(raws, prompts)
    expected = ScoreRequest(raw_images=[r.to_json() for r in raws], prompts=prompts)
    assert ScoreRequest.model_validate(json.loads(body)) == expected
