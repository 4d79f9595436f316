"""Hostile and unusual image files shared by the HTTP and gRPC hostile-input tests.

Each odd-mode case comes with the RGB array the wire protocol's decoding rules promise for it
(docs/wire-protocol.md), built here from the same pixels without the services' decoder, so a
test can check that the service scored exactly that array.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

WHITE = 255


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    """``image`` saved by Pillow as ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The documented rule for transparency: composite over white, rounded to nearest."""
    rgb, alpha = rgb.astype(np.uint32), alpha.astype(np.uint32)[..., None]
    return ((rgb * alpha + WHITE * (255 - alpha) + 127) // 255).astype(np.uint8)


def _alpha_ramp(height: int = 16, width: int = 16) -> np.ndarray:
    """Fully transparent, half and fully opaque pixels in one image."""
    return np.tile(np.array([0, 64, 128, 255], np.uint8), (height, width // 4))


def odd_mode_cases() -> list[tuple[str, bytes, np.ndarray]]:
    """``(name, encoded file, expected RGB array)`` for modes the services must decode."""
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    alpha = _alpha_ramp()
    cases = []

    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    cases.append(("rgba png", encode(rgba), over_white(rgb, alpha)))

    la = Image.fromarray(np.dstack([gray, alpha]), "LA")
    gray_rgb = np.repeat(gray[..., None], 3, axis=2)
    cases.append(("la png", encode(la), over_white(gray_rgb, alpha)))

    # 16-bit values that are exact multiples of 257 scale to exact 8-bit values (x * 255/65535)
    wide = Image.fromarray(gray.astype(np.uint16) * 257)
    assert wide.mode == "I;16"
    cases.append(("16-bit gray png", encode(wide), gray_rgb))

    palette = np.array([[255, 0, 0], [0, 0, 255], [0, 160, 0]], np.uint8)
    indices = (np.arange(256).reshape(16, 16) % 3).astype(np.uint8)
    indexed = Image.fromarray(indices, "P")
    indexed.putpalette(palette.flatten().tolist())
    expected = palette[indices]
    expected[indices == 0] = WHITE  # palette entry 0 is the transparent one
    cases.append(("palette png with transparency", encode(indexed, transparency=0), expected))

    cmyk = Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8), "CMYK")
    cmyk_jpeg = encode(cmyk, "JPEG", quality=90)
    # JPEG is lossy: the promise is Pillow's plain CMYK -> RGB of the decoded file
    with Image.open(io.BytesIO(cmyk_jpeg)) as decoded:
        assert decoded.mode == "CMYK"
        cases.append(("cmyk jpeg", cmyk_jpeg, np.array(decoded.convert("RGB"))))
    return cases


def raw_pixel_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, uint8 [H, W, C] pixels sent raw, expected RGB array)`` for C = 1 and 4."""
    rng = np.random.default_rng(8)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (16, 16, 1), dtype=np.uint8)
    alpha = _alpha_ramp()
    return [
        ("raw rgba", np.dstack([rgb, alpha]), over_white(rgb, alpha)),
        ("raw gray", gray, np.repeat(gray, 3, axis=2)),
    ]


def bad_image_cases() -> list[tuple[str, bytes, str]]:
    """``(name, file, words its error names)``: files that are an error for that image only."""
    return [
        ("png declaring 60000x60000", png_declaring(60000, 60000), "decompression bomb"),
        ("png declaring 5000x5000", png_declaring(5000, 5000), "25000000 pixels"),
        ("zlib bomb png 5000x5000", zlib_bomb_png(5000, 5000), "25000000 pixels"),
        ("jpeg declaring 60000x60000", jpeg_declaring(60000, 60000), "decompression bomb"),
        ("jpeg declaring 5000x5000", jpeg_declaring(5000, 5000), "25000000 pixels"),
        ("1x9000 png", encode(Image.new("L", (1, 9000))), "maximum side of 8192"),
        ("truncated png", truncated(noisy_png()), "truncated"),
        ("truncated jpeg", truncated(noisy_jpeg()), "truncated"),
        ("png signature only", b"\x89PNG\r\n\x1a\n", "not a recognized image"),
        ("empty file", b"", "empty payload"),
    ]


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` (8-bit RGB) over one short IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))


def zlib_bomb_png(width: int, height: int) -> bytes:
    """A real, complete 8-bit grayscale PNG of zeros: a few kB that inflate to width*height."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"\0" * ((width + 1) * height)  # each row: filter byte 0, then its pixels
    data = zlib.compress(rows, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
    )


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small valid JPEG whose frame header (SOF0) is patched to declare width x height."""
    data = bytearray(encode(Image.new("RGB", (8, 8), (10, 20, 30)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)  # marker, length, precision, H, W
    return bytes(data)


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first ``keep`` fraction of a file."""
    return data[: int(len(data) * keep)]


def noisy_png(size: int = 64) -> bytes:
    """A PNG of noise, so that its truncation cuts through pixel data."""
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels))


def noisy_jpeg(size: int = 64) -> bytes:
    """A JPEG of noise, so that its truncation cuts through the entropy-coded data."""
    pixels = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=90)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
