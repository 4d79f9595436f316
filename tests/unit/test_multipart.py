"""Multipart uploads (``curl -F image=@a.png``) on the two score routes, over fake handles.

The real FastAPI app and form parser run in-process; only the reward replicas are fakes. Each
bad form must be a 4xx ``ErrorResponse`` naming the field or file, and the app must keep serving.
"""

from __future__ import annotations

import numpy as np
import pytest

from services.images import ImageLimits, encode_png
from services.protocol import ScoreManyResponse, ScoreResponse
from tests.unit.fake_serving import FAKE_MODEL, FakeHandle, error_body, make_client, make_router

GRAY_PNG = encode_png(np.full((4, 4, 3), 51, dtype=np.uint8))  # mean pixel 51 -> 0.2
WHITE_PNG = encode_png(np.full((4, 4, 3), 255, dtype=np.uint8))  # -> 1.0


def _png(name: str, data: bytes = GRAY_PNG) -> tuple[str, tuple[str, bytes, str]]:
    return ("image", (name, data, "image/png"))


@pytest.fixture
def served():
    """The app over two fake rewards, and the handle of the prompt-reading one."""
    prompted = FakeHandle()
    router = make_router({"bright": FakeHandle(), "prompted": prompted}, {"prompted": True})
    return make_client(router), prompted


def test_files_and_prompts_are_scored_in_order_and_name_the_model(served):
    client, handle = served
    files = [_png("gray.png"), _png("white.png", WHITE_PNG)]
    data = {"prompt": ['a sign that says "A"', "second"]}
    reply = client.post("/v1/rewards/prompted/score", files=files, data=data)
    assert reply.status_code == 200, reply.text
    body = ScoreResponse.model_validate(reply.json())
    assert body.scores() == pytest.approx([0.2, 1.0])
    assert body.model == FAKE_MODEL
    ((images, prompts),) = handle.score.calls
    assert images == [GRAY_PNG, WHITE_PNG]  # the file bytes, untouched
    assert prompts == ['a sign that says "A"', "second"]


def test_score_many_takes_reward_fields(served):
    client, _ = served
    files = [_png("a.png"), _png("b.png", WHITE_PNG)]
    reply = client.post("/v1/score", files=files, data={"reward": ["bright"]})
    assert reply.status_code == 200, reply.text
    (entry,) = ScoreManyResponse.model_validate(reply.json()).results
    assert entry.reward == "bright" and entry.model == FAKE_MODEL
    assert [r.score for r in entry.results] == pytest.approx([0.2, 1.0])


BAD_FORMS = {
    "no image": ({"data": {"prompt": "x"}, "files": {"other": ("x", b"")}}, "'other'"),
    "only a prompt": ({"files": [("prompt", (None, b"x"))]}, "no 'image' file field"),
    "image as text": (
        {"data": {"image": "cat.png"}, "files": [("prompt", ("p", b"x", "text/plain"))]},
        "'image' field is text, not a file",
    ),
    "not an image": (
        {"files": [("image", ("notes.txt", b"hello there", "text/plain"))]},
        "not a recognized image file (accepted formats: PNG, JPEG, WEBP, GIF, BMP, TIFF) "
        "(file 'notes.txt')",
    ),
    "empty file": ({"files": [_png("empty.png", b"")]}, "image 0: empty payload"),
    "prompt as file": (
        {"files": [_png("a.png"), ("prompt", ("p.txt", b"x", "text/plain"))]},
        "'prompt' field must be text",
    ),
    "prompt count": ({"files": [_png("a.png")], "data": {"prompt": ["a", "b"]}}, "2 prompts"),
    "no prompt for a prompted reward": ({"files": [_png("a.png")]}, "need one prompt per image"),
}


@pytest.mark.parametrize("case", list(BAD_FORMS))
def test_a_bad_form_is_422_naming_what_is_wrong(served, case):
    client, handle = served
    kwargs, words = BAD_FORMS[case]
    reply = client.post("/v1/rewards/prompted/score", **kwargs)
    assert words in error_body(reply, 422, "invalid_input").error.message
    assert handle.score.calls == []  # refused before any replica was called
    good = client.post(
        "/v1/rewards/prompted/score", files=[_png("a.png")], data={"prompt": "still serving"}
    )
    assert good.status_code == 200, good.text


def test_reward_fields_only_on_the_score_many_route(served):
    client, _ = served
    reply = client.post("/v1/rewards/bright/score", files=[_png("a.png")], data={"reward": "x"})
    message = error_body(reply, 422, "invalid_input").error.message
    assert "unknown multipart field(s) 'reward'" in message
    reply = client.post("/v1/score", files=[_png("a.png")])
    error_body(reply, 422, "invalid_input")  # no reward named


def test_a_form_that_is_not_multipart_is_422(served):
    client, _ = served
    headers = {"content-type": "multipart/form-data; boundary=xyz"}
    reply = client.post("/v1/rewards/bright/score", content=b"not a form at all", headers=headers)
    error_body(reply, 422, "invalid_input")
    headers = {"content-type": "multipart/form-data"}  # no boundary
    reply = client.post("/v1/rewards/bright/score", content=b"--x\r\n", headers=headers)
    assert "invalid multipart body" in error_body(reply, 422, "invalid_input").error.message


def test_too_large_is_413_naming_the_file_or_the_limit():
    limits = ImageLimits(max_images=2, max_side=3)
    client = make_client(make_router({"bright": FakeHandle()}, {}, limits=limits))
    reply = client.post("/v1/rewards/bright/score", files=[_png("big.png")])
    message = error_body(reply, 413, "payload_too_large").error.message
    assert "over the maximum side of 3" in message and "'big.png'" in message
    reply = client.post("/v1/rewards/bright/score", files=[_png("a.png")] * 3)
    assert "3 images" in error_body(reply, 413, "payload_too_large").error.message
    files = [("image", ("x", b"x", "image/png"))] * 21  # past the parser's own file cap
    reply = client.post("/v1/rewards/bright/score", files=files)
    assert "Too many files" in error_body(reply, 413, "payload_too_large").error.message
    big = b"\x89PNG" + bytes(8000)  # over the app's 4096-byte body limit
    reply = client.post("/v1/rewards/bright/score", files=[_png("huge.png", big)])
    error_body(reply, 413, "payload_too_large")


def test_openapi_lists_the_multipart_form(served):
    client, _ = served
    paths = client.get("/openapi.json").json()["paths"]
    single = paths["/v1/rewards/{name}/score"]["post"]["requestBody"]["content"]
    many = paths["/v1/score"]["post"]["requestBody"]["content"]
    assert single["multipart/form-data"]["schema"]["required"] == ["image"]
    assert many["multipart/form-data"]["schema"]["required"] == ["image", "reward"]
