"""Bad input gets a clear 4xx (or gRPC status) naming the problem, and the service keeps serving.

Also: a killed replica is replaced by Serve and the client's retry succeeds.
"""

from __future__ import annotations

import base64

import grpc
import httpx
import numpy as np
import pytest

from services.client import RetryPolicy, RewardClient
from services.images import RawPixels, encode_base64_png, encode_png
from services.proto import reward_pb2 as pb
from services.proto import reward_pb2_grpc
from tests.integration.conftest import MAX_BODY_BYTES
from tests.integration.hostile_inputs import noisy_png, png_declaring, truncated

pytestmark = pytest.mark.integration

GOOD = np.full((24, 24, 3), 90, dtype=np.uint8)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


GOOD_B64 = encode_base64_png(GOOD)
GOOD_RAW = RawPixels.of(GOOD).to_json()
# (name, path, json body, expected status, expected error code, words the message must contain)
HTTP_CASES = [
    ("zero images", "aesthetic", {"images": []}, 422, "invalid_input", "image"),
    ("too many images", "aesthetic", {"images": [GOOD_B64] * 65}, 413, "payload_too_large", "64"),
    (
        "prompt count mismatch",
        "pickscore",
        {"images": [GOOD_B64] * 2, "prompts": ["one"]},
        422,
        "invalid_input",
        "1 prompts for 2 images",
    ),
    ("missing prompt", "pickscore", {"images": [GOOD_B64]}, 422, "invalid_input", "prompt"),
    ("unknown reward", "nope", {"images": [GOOD_B64]}, 404, "unknown_reward", "nope"),
    ("unknown field", "aesthetic", {"images": [GOOD_B64], "x": 1}, 422, "invalid_input", "x"),
    ("images not a list", "aesthetic", {"images": "abc"}, 422, "invalid_input", "images"),
    (
        "control character in prompt",
        "pickscore",
        {"images": [GOOD_B64], "prompts": ["bad\x00prompt"]},
        422,
        "invalid_input",
        "U+0000",
    ),
    (
        "images and raw_images",
        "aesthetic",
        {"images": [GOOD_B64], "raw_images": [GOOD_RAW]},
        422,
        "invalid_input",
        "not both",
    ),
    (
        "raw image size out of range",
        "aesthetic",
        {"raw_images": [{**GOOD_RAW, "width": 2**40}]},
        422,
        "invalid_input",
        "raw_images",
    ),
    (
        "absurdly long prompt",
        "pickscore",
        {"images": [GOOD_B64], "prompts": ["x" * 5000]},
        413,
        "payload_too_large",
        "5000",
    ),
]
# one bad image among good ones: an error for that item only
ITEM_CASES = [
    ("not base64", "%%%not base64%%%", "base64"),
    ("not an image", _b64(b"hello, I am text"), "not a recognized image"),
    ("truncated", _b64(truncated(noisy_png())), "truncated"),
    ("decompression bomb", _b64(png_declaring(60000, 60000)), "pixels"),
]


@pytest.mark.parametrize("case", HTTP_CASES, ids=[c[0] for c in HTTP_CASES])
def test_http_rejects_bad_requests_and_keeps_serving(reward_app, case):
    _, reward, body, status, code, words = case
    url = f"{reward_app.http_url}/v1/rewards/{reward}/score"
    reply = httpx.post(url, json=body, timeout=60)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == code
    assert words.lower() in error["message"].lower()
    good = httpx.post(
        f"{reward_app.http_url}/v1/rewards/aesthetic/score", json={"images": [GOOD_B64]}, timeout=60
    )
    assert good.status_code == 200 and good.json()["results"][0]["score"] is not None


@pytest.mark.parametrize("case", ITEM_CASES, ids=[c[0] for c in ITEM_CASES])
def test_one_bad_image_is_an_error_for_that_item_only(reward_app, case):
    _, payload, words = case
    body = {"images": [GOOD_B64, payload, GOOD_B64]}
    reply = httpx.post(f"{reward_app.http_url}/v1/rewards/aesthetic/score", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert results[0]["score"] is not None and results[2]["score"] is not None
    assert results[1]["score"] is None
    assert words.lower() in results[1]["error"].lower()


RAW_ITEM_CASES = [
    ("wrong byte count", {**GOOD_RAW, "height": 23}, "needs 2208"),
    ("two channels", {**GOOD_RAW, "channels": 2}, "2 channels"),
    ("bad base64", {**GOOD_RAW, "data": "!" * len(GOOD_RAW["data"])}, "base64"),
    ("raw bomb", {**GOOD_RAW, "height": 60000, "width": 60000}, "pixels"),
]


@pytest.mark.parametrize("case", RAW_ITEM_CASES, ids=[c[0] for c in RAW_ITEM_CASES])
def test_one_bad_raw_image_is_an_error_for_that_item_only(reward_app, case):
    _, bad, words = case
    body = {"raw_images": [GOOD_RAW, bad, GOOD_RAW]}
    reply = httpx.post(f"{reward_app.http_url}/v1/rewards/aesthetic/score", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert results[0]["score"] is not None and results[2]["score"] is not None
    assert results[0]["score"] == pytest.approx(_png_score(reward_app))
    assert results[1]["score"] is None and words.lower() in results[1]["error"].lower()


def _png_score(reward_app) -> float:
    body = {"images": [GOOD_B64]}
    reply = httpx.post(f"{reward_app.http_url}/v1/rewards/aesthetic/score", json=body, timeout=60)
    return reply.json()["results"][0]["score"]


def test_http_protobuf_bodies_are_checked_like_grpc_calls(reward_app):
    url = f"{reward_app.http_url}/v1/rewards/aesthetic/score"
    proto = {"content-type": "application/x-protobuf"}
    garbage = httpx.post(url, content=b"\xff\xff\xff", headers=proto, timeout=60)
    assert garbage.status_code == 422, garbage.text
    assert "not a valid reward.v1.ScoreRequest" in garbage.json()["error"]["message"]
    empty = httpx.post(url, content=b"", headers=proto, timeout=60)
    assert empty.status_code == 422 and "at least one image" in empty.json()["error"]["message"]
    other = httpx.post(url, content=b"x", headers={"content-type": "text/plain"}, timeout=60)
    assert other.status_code == 422 and "application/x-protobuf" in other.text
    bad_item = pb.ScoreRequest(images=[b"garbage", encode_png(GOOD)])
    reply = httpx.post(url, content=bad_item.SerializeToString(), headers=proto, timeout=60)
    results = reply.json()["results"]
    assert results[0]["score"] is None and results[0]["error"]
    assert results[1]["score"] == pytest.approx(_png_score(reward_app))


def test_http_rejects_malformed_json_and_oversized_body(reward_app):
    url = f"{reward_app.http_url}/v1/rewards/aesthetic/score"
    broken = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422 and broken.json()["error"]["code"] == "invalid_input"
    huge = {"images": ["A" * (MAX_BODY_BYTES + 10)]}
    reply = httpx.post(url, json=huge, timeout=60)
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "payload_too_large"
    assert httpx.post(url, json={"images": [GOOD_B64]}, timeout=60).status_code == 200


GRPC_CASES = [
    ("unknown reward", pb.ScoreRequest(reward="nope", images=[encode_png(GOOD)]), "NOT_FOUND"),
    ("zero images", pb.ScoreRequest(reward="aesthetic"), "INVALID_ARGUMENT"),
    (
        "prompt mismatch",
        pb.ScoreRequest(reward="pickscore", images=[encode_png(GOOD)] * 2, prompts=["a"]),
        "INVALID_ARGUMENT",
    ),
    (
        "too many images",
        pb.ScoreRequest(reward="aesthetic", images=[encode_png(GOOD)] * 65),
        "RESOURCE_EXHAUSTED",
    ),
    (
        "images and raw_images",
        pb.ScoreRequest(
            reward="aesthetic",
            images=[encode_png(GOOD)],
            raw_images=[pb.RawImage(height=24, width=24, channels=3, data=GOOD.tobytes())],
        ),
        "INVALID_ARGUMENT",
    ),
]


@pytest.mark.parametrize("case", GRPC_CASES, ids=[c[0] for c in GRPC_CASES])
def test_grpc_maps_bad_requests_to_status_codes(reward_app, case):
    _, request, code = case
    metadata = [("application", reward_app.app_name)]
    with grpc.insecure_channel(reward_app.grpc_target) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Score(request, metadata=metadata, timeout=60)
        assert caught.value.code().name == code
        assert caught.value.details()
        bad_item = pb.ScoreRequest(reward="aesthetic", images=[b"garbage", encode_png(GOOD)])
        reply = stub.Score(bad_item, metadata=metadata, timeout=60)
    assert not reply.results[0].HasField("score") and reply.results[0].error
    assert reply.results[1].HasField("score")


def test_grpc_bad_raw_image_is_an_error_for_that_item_only(reward_app):
    metadata = [("application", reward_app.app_name)]
    good = pb.RawImage(height=24, width=24, channels=3, data=GOOD.tobytes())
    short = pb.RawImage(height=24, width=24, channels=3, data=GOOD.tobytes()[:-1])
    request = pb.ScoreRequest(reward="aesthetic", raw_images=[short, good])
    with grpc.insecure_channel(reward_app.grpc_target) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        reply = stub.Score(request, metadata=metadata, timeout=60)
        png = stub.Score(
            pb.ScoreRequest(reward="aesthetic", images=[encode_png(GOOD)]),
            metadata=metadata,
            timeout=60,
        )
    assert not reply.results[0].HasField("score")
    assert "1727 bytes" in reply.results[0].error
    assert reply.results[1].score == pytest.approx(png.results[0].score)


def _replica_actor_names(deployment: str) -> list[str]:
    import ray

    actors = ray.util.list_named_actors(all_namespaces=True)
    return [a["name"] for a in actors if "REPLICA" in a["name"] and f"#{deployment}#" in a["name"]]


@pytest.mark.slow
def test_killed_replica_is_replaced_and_the_client_retry_succeeds(reward_app):
    import ray

    names = _replica_actor_names("jpeg_compressibility")
    assert names, "no replica actor found"
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
    client = RewardClient.in_cluster(
        reward_app.app_name, timeout_s=30, retry=RetryPolicy(max_retries=10, backoff_s=0.5)
    )
    try:
        matrix = client.score([GOOD] * 4, None, ["jpeg_compressibility"])
    finally:
        client.close()
    assert matrix.failures == {}
    assert np.all(np.isfinite(matrix.scores))
    assert _replica_actor_names("jpeg_compressibility") != names  # a new replica serves
