"""Image decoding and validation: every accepted path, every odd mode, every bad input."""

import base64
import contextlib
import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile
from pydantic import ValidationError

from services.errors import InvalidInput, PayloadTooLarge
from services.images import (
    DEFAULT_LIMITS,
    ImageLimits,
    b64decode_strict,
    check_image_count,
    decode_base64,
    decode_batch,
    decode_bytes,
    decode_image,
    encode_base64_png,
    encode_png,
    from_array,
    validate_prompt,
    validate_prompts,
)

RNG = np.random.default_rng(0)
NOISE = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header declares width x height (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def no_pixel_decoding(monkeypatch):
    """Fail loudly if any code decodes pixels: limits must act on the header alone."""

    def refuse(self):
        raise AssertionError("pixels were decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


# --- valid files and modes ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_formats_round_trip_exactly(fmt):
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    out = decode_bytes(encode(Image.fromarray(NOISE), fmt, **kwargs))
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3) and out.flags.writeable
    np.testing.assert_array_equal(out, NOISE)


def test_jpeg_decodes_to_rgb():
    smooth = np.full((16, 16, 3), (200, 100, 50), np.uint8)
    out = decode_bytes(encode(Image.fromarray(smooth), "JPEG", quality=95))
    assert out.shape == (16, 16, 3)
    assert np.abs(out.astype(int) - smooth).max() <= 3


def test_grayscale_and_bilevel():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = decode_bytes(encode(Image.fromarray(gray), "PNG"))
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))
    bilevel = Image.new("1", (2, 1))
    bilevel.putpixel((1, 0), 1)
    assert decode_bytes(encode(bilevel, "PNG")).tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_palette_with_and_without_transparency():
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((1, 0), 1)
    assert decode_bytes(encode(palette, "PNG")).tolist() == [[[255, 0, 0], [0, 0, 255]]]
    transparent_red = decode_bytes(encode(palette, "PNG", transparency=0))
    assert transparent_red.tolist() == [[[255, 255, 255], [0, 0, 255]]]  # over white


def test_alpha_is_composited_over_white():
    rgba = np.array([[[0, 0, 0, 0], [10, 20, 30, 255], [0, 0, 0, 128]]], np.uint8)
    out = decode_bytes(encode(Image.fromarray(rgba), "PNG"))
    assert out.tolist() == [[[255, 255, 255], [10, 20, 30], [127, 127, 127]]]
    la = Image.fromarray(np.array([[[0, 0], [50, 255]]], np.uint8), mode="LA")
    assert decode_bytes(encode(la, "PNG")).tolist() == [[[255] * 3, [50] * 3]]


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    wide = np.array([[0, 1000, 32896, 65535]], np.uint16)
    out = decode_bytes(encode(Image.fromarray(wide), "PNG"))
    assert out[..., 0].tolist() == [[0, 4, 128, 255]]  # clipping would give 0, 255, 255, 255


def test_float_grayscale_is_read_as_unit_range():
    values = np.array([[0.0, 0.5, 1.0, 2.0, -1.0]], np.float32)
    out = decode_bytes(encode(Image.fromarray(values), "TIFF"))
    assert out[..., 0].tolist() == [[0, 128, 255, 255, 0]]
    with pytest.raises(InvalidInput, match="image 0: float image with NaN"):
        decode_bytes(encode(Image.fromarray(np.array([[np.nan]], np.float32)), "TIFF"))


@pytest.mark.parametrize(("fmt", "tolerance"), [("TIFF", 0), ("JPEG", 3)])
def test_cmyk(fmt, tolerance):
    cmyk = Image.new("CMYK", (3, 1))
    for x, value in enumerate([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)]):
        cmyk.putpixel((x, 0), value)
    out = decode_bytes(encode(cmyk, fmt, **({"quality": 100} if fmt == "JPEG" else {})))
    expected = np.array([[[255, 255, 255], [0, 255, 255], [0, 0, 0]]])
    assert np.abs(out.astype(int) - expected).max() <= tolerance


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(fmt):
    stored = np.zeros((8, 16, 3), np.uint8)  # 16 wide, 8 tall; left column red, rest blue
    stored[:, :] = (0, 0, 255)
    stored[:, :4] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    out = decode_bytes(encode(Image.fromarray(stored), fmt, exif=exif.tobytes()))
    assert out.shape == (16, 8, 3)
    assert out[1, 4, 0] > 200 and out[1, 4, 2] < 50  # the left stripe is now on top
    assert out[14, 4, 2] > 200 and out[14, 4, 0] < 50


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (4, 4), color) for color in [(255, 0, 0), (0, 255, 0)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode_bytes(data)[0, 0].tolist() == [255, 0, 0]


# --- bad files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "image 0: empty payload"),
        (b"hello, not an image", "image 0: not a recognized image file"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image 0: "),
        ("not bytes", "image 0: expected encoded image bytes, got str"),
    ],
)
def test_not_an_image(payload, message):
    with pytest.raises(InvalidInput, match=message):
        decode_bytes(payload)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_files_are_rejected(fmt):
    data = encode(Image.fromarray(NOISE), fmt)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    with pytest.raises(InvalidInput, match="image 0: ") as info:
        decode_bytes(data[: len(data) // 2])
    assert type(info.value) is InvalidInput


def test_formats_outside_the_allow_list_are_refused():
    ppm = encode(Image.fromarray(NOISE), "PPM")  # Pillow opens it, we do not
    with pytest.raises(InvalidInput, match="accepted formats: PNG, JPEG"):
        decode_bytes(ppm)
    png_only = ImageLimits(formats=("PNG",))
    with pytest.raises(InvalidInput, match="accepted formats: PNG\\)"):
        decode_bytes(encode(Image.fromarray(NOISE), "JPEG"), limits=png_only)


def test_too_many_encoded_bytes():
    with pytest.raises(PayloadTooLarge, match="image 4: .* bytes encoded, over the limit of 100"):
        decode_bytes(encode(Image.fromarray(NOISE), "PNG"), 4, ImageLimits(max_bytes=100))


@pytest.mark.usefixtures("no_pixel_decoding")
def test_decompression_bomb_header_rejected_before_decoding():
    bomb = png_claiming_size(5000, 5000)  # 25 M pixels over our 16.7 M, under Pillow's guard
    assert len(bomb) < 200
    with pytest.raises(PayloadTooLarge, match="image 2: 5000x5000 = 25000000 pixels"):
        decode_bytes(bomb, 2)


@pytest.mark.usefixtures("no_pixel_decoding")
def test_pillow_bomb_guard_maps_to_payload_too_large():
    with pytest.raises(PayloadTooLarge, match="image 0: declared size too large"):
        decode_bytes(png_claiming_size(30000, 30000))  # over twice Pillow's MAX_IMAGE_PIXELS


@pytest.mark.usefixtures("no_pixel_decoding")
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bomb_between_pillow_warning_and_error_is_rejected():
    with pytest.raises(PayloadTooLarge, match="pixels"):
        decode_bytes(png_claiming_size(10000, 10000))


def test_real_compressed_bomb_is_rejected_before_decoding(monkeypatch):
    solid = encode(Image.new("1", (4200, 4200)), "PNG")  # 17.6 M pixels in a few KB
    assert len(solid) < 20_000
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    with pytest.raises(PayloadTooLarge, match="4200x4200"):
        decode_bytes(solid)


@pytest.mark.parametrize(
    ("limits", "size", "error", "message"),
    [
        (ImageLimits(max_pixels=100), (11, 10), PayloadTooLarge, "11x10 = 110 pixels"),
        (ImageLimits(max_side=10), (11, 2), PayloadTooLarge, "over the maximum side of 10"),
        (ImageLimits(min_side=8), (8, 7), InvalidInput, "below the minimum side of 8"),
    ],
)
def test_dimension_limits(limits, size, error, message, monkeypatch):
    data = encode(Image.new("RGB", size), "PNG")
    array = np.zeros((size[1], size[0], 3), np.uint8)
    with pytest.raises(error, match=message):
        from_array(array, 0, limits)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    with pytest.raises(error, match=message):
        decode_bytes(data, 0, limits)


# --- base64 ----------------------------------------------------------------------------------


def test_base64_plain_and_data_url():
    text = encode_base64_png(NOISE)
    np.testing.assert_array_equal(decode_base64(text), NOISE)
    for prefix in ("data:image/png;base64,", "DATA:image/png;charset=x;base64,", "data:;base64,"):
        np.testing.assert_array_equal(decode_base64(prefix + text), NOISE)


@pytest.mark.parametrize(
    "text",
    [
        "!!!!",
        "aGVsbG8",  # missing padding
        "aGVs\nbG8=",  # whitespace
        "aGVsbG8_",  # URL-safe alphabet
        "aGVsbG8=é",
    ],
)
def test_not_base64(text):
    with pytest.raises(InvalidInput, match="image 3: not a valid base64 string"):
        decode_base64(text, 3)


def test_bad_data_urls_and_types():
    with pytest.raises(InvalidInput, match="image 0: malformed data URL"):
        decode_base64("data:image/png," + encode_base64_png(NOISE))
    with pytest.raises(InvalidInput, match="image 0: empty payload"):
        decode_base64("")
    with pytest.raises(InvalidInput, match="image 0: expected a base64 string, got bytes"):
        decode_base64(b"aGVsbG8=")
    with pytest.raises(InvalidInput, match="image 0: not a recognized image"):
        decode_base64(base64.b64encode(b"plain text").decode())


def test_base64_length_is_checked_before_decoding(monkeypatch):
    monkeypatch.setattr(base64, "b64decode", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(PayloadTooLarge, match="image 1: about 750 bytes once decoded"):
        b64decode_strict("A" * 1000, 1, ImageLimits(max_bytes=600))


# --- raw arrays (the in-cluster handle path) --------------------------------------------------


def test_rgb_array_is_returned_without_copy():
    assert from_array(NOISE) is NOISE
    strided = NOISE[:, ::2]
    out = from_array(strided)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, strided)


def test_array_channel_layouts():
    gray = NOISE[..., 0]
    expected = np.repeat(gray[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(from_array(gray), expected)
    np.testing.assert_array_equal(from_array(gray[:, :, None]), expected)
    rgba = np.concatenate([NOISE, np.full((24, 32, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(from_array(rgba), NOISE)
    rgba[0, 0] = (0, 0, 0, 0)
    assert from_array(rgba)[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (NOISE.astype(np.float32) / 255, "dtype float32, expected uint8"),
        (NOISE.astype(np.int64), "dtype int64, expected uint8"),
        (NOISE > 127, "dtype bool, expected uint8"),
        (NOISE.tolist(), "expected a numpy array, got list"),
        (np.transpose(NOISE, (2, 0, 1)), "looks channels-first"),
        (NOISE[..., :2], r"shape \(24, 32, 2\)"),
        (NOISE[None], r"shape \(1, 24, 32, 3\)"),
        (np.zeros(5, np.uint8), r"shape \(5,\)"),
        (np.zeros((0, 5, 3), np.uint8), "0 pixels, below the minimum side|5x0 pixels"),
    ],
)
def test_bad_arrays(array, message):
    with pytest.raises(InvalidInput, match=f"image 7: .*{message}"):
        from_array(array, 7)


# --- prompts ---------------------------------------------------------------------------------


def test_good_prompts_are_unchanged():
    text = '  a sign that says "OPEN"\n\twith émojis 🎉\r\n'
    assert validate_prompt(text) is text
    assert validate_prompt("x" * DEFAULT_LIMITS.max_prompt_chars)


@pytest.mark.parametrize(
    ("text", "code"), [("a\x00b", "0000"), ("\x1b[31m", "001B"), ("\x7f", "007F"), ("\x85", "0085")]
)
def test_control_characters_are_rejected(text, code):
    with pytest.raises(InvalidInput, match=f"prompt 2: forbidden character U\\+{code}"):
        validate_prompt(text, 2)


def test_lone_surrogates_and_non_strings_are_rejected():
    with pytest.raises(InvalidInput, match="U\\+D800"):
        validate_prompt("bad \ud800")
    with pytest.raises(InvalidInput, match="prompt 1: expected a string, got int"):
        validate_prompt(5, 1)


def test_overlong_prompt():
    with pytest.raises(PayloadTooLarge, match="prompt 0: 2001 characters, over the limit of 2000"):
        validate_prompt("x" * 2001)


def test_prompt_lists():
    assert validate_prompts(None, 3) is None
    assert validate_prompts([], 3) is None
    assert validate_prompts(("a", "b"), 2) == ["a", "b"]
    with pytest.raises(InvalidInput, match="got 2 prompts for 3 images"):
        validate_prompts(["a", "b"], 3)
    with pytest.raises(InvalidInput, match="list of strings"):
        validate_prompts("abc", 3)


# --- batches and encoding --------------------------------------------------------------------


def test_batch_accepts_every_payload_kind():
    png = encode_png(NOISE)
    arrays, prompts = decode_batch([png, encode_base64_png(NOISE), NOISE], ["a", "b", "c"])
    assert prompts == ["a", "b", "c"]
    for array in arrays:
        np.testing.assert_array_equal(array, NOISE)


def test_batch_errors_name_the_item():
    good = encode_png(NOISE)
    with pytest.raises(InvalidInput, match="image 2: not a valid base64 string"):
        decode_batch([good, good, "%%%"])
    with pytest.raises(InvalidInput, match="image 1: unsupported payload type int"):
        decode_image(3, 1)


def test_batch_counts_are_checked_before_decoding():
    with pytest.raises(InvalidInput, match="at least one image"):
        decode_batch([])
    with pytest.raises(PayloadTooLarge, match="3 images in one request, over the limit of 2"):
        decode_batch(["%%%"] * 3, limits=ImageLimits(max_images=2))
    with pytest.raises(InvalidInput, match="got 1 prompts for 2 images"):
        decode_batch(["%%%", "%%%"], ["only one"])
    check_image_count(256)


def test_limits_config():
    with pytest.raises(ValidationError, match="min_side"):
        ImageLimits(min_side=10, max_side=5)
    with pytest.raises(ValidationError, match="extra"):
        ImageLimits(max_megapixels=3)


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 17),
    width=st.integers(1, 17),
    channels=st.sampled_from([None, 1, 3]),
    seed=st.integers(0, 2**16),
)
def test_png_round_trip_property(height, width, channels, seed):
    shape = (height, width) if channels is None else (height, width, channels)
    array = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    out = decode_bytes(encode_png(array))
    np.testing.assert_array_equal(out, from_array(array))


@settings(max_examples=150, deadline=None)
@given(
    prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"RIFF"]),
    body=st.binary(max_size=300),
)
def test_arbitrary_bytes_never_escape_as_other_errors(prefix, body):
    with contextlib.suppress(InvalidInput):
        decode_bytes(prefix + body)
