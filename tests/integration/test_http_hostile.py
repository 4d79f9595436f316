"""Hostile input over HTTP that test_serving_errors.py does not send: odd image modes (scored as
their documented RGB), more bombs and truncated files, lone surrogates and unicode in prompts,
a body that is not UTF-8, and bad multipart uploads (each a 4xx naming the field or file). The
gRPC twin of these cases is test_grpc_hostile.py.
"""

from __future__ import annotations

import base64
import json
import math

import httpx
import numpy as np
import pytest

from services.images import encode_base64_png
from tests.integration import hostile_inputs as hostile

pytestmark = pytest.mark.integration

TIMEOUT_S = 60
GOOD_B64 = encode_base64_png(np.full((24, 24, 3), 90, dtype=np.uint8))
ODD_MODES = hostile.odd_mode_cases()
COVERED_ELSEWHERE = {"png declaring 60000x60000", "truncated png"}  # test_serving_errors.py
BAD_IMAGES = [c for c in hostile.bad_image_cases() if c[0] not in COVERED_ELSEWHERE]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture(scope="module")
def client(reward_app):
    """One HTTP client for the module."""
    with httpx.Client(base_url=reward_app.http_url, timeout=TIMEOUT_S) as opened:
        yield opened


@pytest.fixture
def still_serving(client):
    """After the test, a good request must still be scored."""
    yield
    reply = client.post("/v1/rewards/aesthetic/score", json={"images": [GOOD_B64]})
    assert reply.status_code == 200 and reply.json()["results"][0]["score"] is not None


@pytest.mark.parametrize("case", ODD_MODES, ids=[c[0] for c in ODD_MODES])
def test_odd_image_modes_are_scored_as_their_documented_rgb(client, case):
    _, data, expected = case
    body = {"images": [_b64(data), encode_base64_png(expected)]}
    reply = client.post("/v1/rewards/aesthetic/score", json=body)
    assert reply.status_code == 200, reply.text
    odd, reference = reply.json()["results"]
    assert odd["score"] is not None and math.isfinite(odd["score"]), odd["error"]
    assert odd["score"] == pytest.approx(reference["score"], rel=1e-5, abs=1e-7)


def test_odd_image_modes_are_scored_by_every_reward_at_once(client):
    images = [_b64(data) for _, data, _ in ODD_MODES]
    body = {
        "rewards": ["aesthetic", "pickscore", "jpeg_compressibility"],
        "images": images,
        "prompts": ["a photo"] * len(images),
    }
    reply = client.post("/v1/score", json=body)
    assert reply.status_code == 200, reply.text
    for entry in reply.json()["results"]:
        assert entry["error"] is None
        assert all(math.isfinite(item["score"]) for item in entry["results"]), entry


@pytest.mark.parametrize("case", BAD_IMAGES, ids=[c[0] for c in BAD_IMAGES])
def test_bad_image_is_an_error_for_that_image_only(client, still_serving, case):
    _, data, words = case
    body = {"images": [GOOD_B64, _b64(data), GOOD_B64]}
    reply = client.post("/v1/rewards/aesthetic/score", json=body)
    assert reply.status_code == 200, reply.text
    first, bad, last = reply.json()["results"]
    assert first["score"] is not None and last["score"] is not None
    assert bad["score"] is None
    assert bad["error"].startswith("image 1:") and words.lower() in bad["error"].lower()


def test_lone_surrogate_in_prompt_is_rejected_naming_it(client, still_serving):
    # JSON may carry an unpaired \ud800 escape (json.dumps writes one; json.loads reads it)
    body = json.dumps({"images": [GOOD_B64], "prompts": ["a \ud800 b"]})
    assert "\\ud800" in body
    headers = {"content-type": "application/json"}
    reply = client.post("/v1/rewards/pickscore/score", content=body.encode(), headers=headers)
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["code"] == "invalid_input"
    assert "prompt 0: forbidden character U+D800 at position 2" in error["message"]


@pytest.mark.parametrize("char", ["\x1b", "\x7f", "\x85"], ids=["ESC", "DEL", "NEL"])
def test_control_character_in_prompt_is_rejected_naming_it(client, still_serving, char):
    body = {"images": [GOOD_B64], "prompts": [f"a cat{char}"]}
    reply = client.post("/v1/rewards/pickscore/score", json=body)
    assert reply.status_code == 422, reply.text
    assert f"U+{ord(char):04X} at position 5" in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    "prompt",
    ["x" * 2000, "一只猫坐在垫子上 🐱🌧️", "emoji family 👨‍👩‍👧", "مرحبا \u202e e\u0301\t\n\r"],
    ids=["2000 chars", "cjk emoji", "zwj emoji", "rtl combining whitespace"],
)
def test_long_or_unicode_prompt_is_scored(client, prompt):
    body = {"images": [GOOD_B64], "prompts": [prompt]}
    reply = client.post("/v1/rewards/pickscore/score", json=body)
    assert reply.status_code == 200, reply.text
    assert math.isfinite(reply.json()["results"][0]["score"])


@pytest.mark.parametrize("path", ["/v1/rewards/aesthetic/score", "/v1/score"])
def test_body_that_is_not_utf8_is_invalid_input(client, still_serving, path):
    body = json.dumps({"images": [GOOD_B64]}).encode().replace(b"images", b"im\xffges")
    reply = client.post(path, content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["code"] == "invalid_input"
    assert "UTF-8" in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("PUT", "/v1/score", "POST"), ("DELETE", "/v1/rewards", "GET"), ("GET", "/v1/score", "POST")],
)
def test_wrong_method_is_405_naming_the_allowed_ones(client, method, path, allowed):
    reply = client.request(method, path)
    assert reply.status_code == 405
    assert reply.headers["allow"] == allowed  # RFC 9110: a 405 lists the allowed methods
    assert reply.json()["error"]["code"] == "method_not_allowed"


# --- multipart uploads (curl -F image=@file) ---------------------------------------------------

BAD_FORMS = {
    "no image field": ({"files": [("prompt", (None, b"a photo"))]}, 422, "no 'image' file field"),
    "image sent as text": ({"files": [("image", (None, b"cat.png"))]}, 422, "is text, not a file"),
    "not an image": (
        {"files": [("image", ("notes.txt", b"just some notes", "text/plain"))]},
        422,
        "image 0: not a recognized image file",
    ),
    "unknown field": (
        {"files": [("image", ("a.png", hostile.noisy_png(8), "image/png")), ("x", (None, b"1"))]},
        422,
        "unknown multipart field(s) 'x'",
    ),
    "declared too large": (
        {"files": [("image", ("wide.png", hostile.png_declaring(9000, 100), "image/png"))]},
        413,
        "image 0: 9000x100 pixels, over the maximum side of 8192 (file 'wide.png')",
    ),
    "body over the limit": (
        {"files": [("image", ("big.png", b"\x89PNG" + bytes(9 * 2**20), "image/png"))]},
        413,
        "request body over the limit",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FORMS))
def test_a_bad_multipart_upload_is_a_4xx_naming_what_is_wrong(client, still_serving, case):
    kwargs, status, words = BAD_FORMS[case]
    reply = client.post("/v1/rewards/aesthetic/score", **kwargs)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == ("payload_too_large" if status == 413 else "invalid_input")
    assert words in error["message"]


def test_a_multipart_upload_scores_like_the_same_file_in_json(client):
    png = hostile.noisy_png(24)
    files = [("image", ("noise.png", png, "image/png"))] * 2
    form = client.post("/v1/rewards/aesthetic/score", files=files)
    assert form.status_code == 200, form.text
    body = client.post("/v1/rewards/aesthetic/score", json={"images": [_b64(png)]}).json()
    scores = [item["score"] for item in form.json()["results"]]
    # two images batch differently from one: float32 sums differ in the last bits (abs)
    assert scores == pytest.approx([body["results"][0]["score"]] * 2, rel=1e-6, abs=1e-6)
    assert form.json()["model"] == body["model"]
    assert body["model"].startswith("random-weight tiny CLIP + aesthetic MLP")
