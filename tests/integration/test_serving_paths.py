"""Handles, HTTP and gRPC reach the same scoring code and return the in-process numbers.

HTTP and gRPC are checked with both image forms, raw pixels (the clients' default) and PNG, and
HTTP with all three bodies: protobuf (the client's default), JSON and a multipart upload. Every
answer names the model that scored, as the reward describes itself in-process.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from services.client import RewardClient
from services.protocol import (
    HealthResponse,
    RewardsListResponse,
    ScoreManyResponse,
    ScoreResponse,
)
from services.rewards.base import build_reward
from tests.integration.conftest import REWARD_DEPLOYMENTS
from tests.rendering import render

pytestmark = pytest.mark.integration

REWARDS = [d["reward"] for d in REWARD_DEPLOYMENTS]


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        (rng.random((40, 56, 3)) * 255).astype(np.uint8),
        render("OPEN", size=(256, 128), font_size=40),
        np.full((64, 64, 3), 200, dtype=np.uint8),
    ]


PROMPTS = ['a sign that says "OPEN"', 'a sign that says "OPEN"', "a grey square"]


@pytest.fixture(scope="module")
def in_process_scores() -> dict[str, list[float | None]]:
    out = {}
    for dep in REWARD_DEPLOYMENTS:
        model = build_reward(dep["reward"], dep.get("params"))
        model.load()
        out[dep["reward"]] = model.score(_images(), PROMPTS)
    return out


@pytest.fixture(scope="module")
def models() -> dict[str, str]:
    """Each served reward's model description, as built in-process from the same params."""
    return {
        d["reward"]: build_reward(d["reward"], d.get("params")).model_info().description
        for d in REWARD_DEPLOYMENTS
    }


@pytest.fixture(scope="module")
def clients(reward_app):
    made = {
        "handle": RewardClient.in_cluster(reward_app.app_name),
        "http": RewardClient.over_http(reward_app.http_url),
        "grpc": RewardClient.over_grpc(reward_app.grpc_target),
        "http-json": RewardClient.over_http(reward_app.http_url, body_format="json"),
        "http-png": RewardClient.over_http(
            reward_app.http_url, image_format="png", body_format="json"
        ),
        "http-proto-png": RewardClient.over_http(reward_app.http_url, image_format="png"),
        "grpc-png": RewardClient.over_grpc(reward_app.grpc_target, image_format="png"),
    }
    yield made
    for client in made.values():
        client.close()


PATHS = ["handle", "http", "grpc", "http-json", "http-png", "http-proto-png", "grpc-png"]


@pytest.mark.parametrize("path", PATHS)
def test_every_path_returns_the_in_process_scores(clients, in_process_scores, models, path):
    matrix = clients[path].score(_images(), PROMPTS, REWARDS)
    assert matrix.failures == {}
    assert matrix.models == models
    assert models["pickscore"].startswith("random-weight tiny CLIP")
    assert models["ocr"].endswith("wheel, real weights)")
    for k, reward in enumerate(REWARDS):
        expected = np.array(in_process_scores[reward], dtype=float)  # None -> NaN
        assert np.isfinite(expected).sum() >= 2, reward
        np.testing.assert_allclose(matrix.scores[k], expected, rtol=1e-5, atol=1e-6, err_msg=reward)


def test_served_ocr_reads_rendered_text(clients):
    image = render("HELLO", size=(320, 160), font_size=48)
    prompts = ['a poster that says "HELLO"', 'a poster that says "GOODBYE"', "no quotes here"]
    matrix = clients["http"].score([image] * 3, prompts, ["ocr"])
    assert matrix.scores[0, 0] == pytest.approx(1.0)
    assert matrix.scores[0, 1] < 0.5
    assert np.isnan(matrix.scores[0, 2])  # nothing to read for: unscorable, never 0
    assert matrix.errors["ocr"][2].startswith("prompt names no text to read: expected the text")


def test_a_multipart_upload_scores_as_the_client_does(reward_app, clients, models):
    from services.images import encode_png

    image = render("HELLO", size=(320, 160), font_size=48)
    files = [("image", ("hello.png", encode_png(image), "image/png"))] * 2
    data = {"prompt": ['a poster that says "HELLO"', "a poster"]}
    reply = httpx.post(f"{reward_app.http_url}/v1/rewards/ocr/score", files=files, data=data)
    assert reply.status_code == 200, reply.text
    body = ScoreResponse.model_validate(reply.json())
    assert body.model == models["ocr"]
    assert body.results[0].score == pytest.approx(1.0)
    assert body.results[1].score is None and "no text to read" in body.results[1].error
    data = {"reward": ["colorfulness", "jpeg_compressibility"]}
    reply = httpx.post(f"{reward_app.http_url}/v1/score", files=files, data=data, timeout=60)
    assert reply.status_code == 200, reply.text
    many = ScoreManyResponse.model_validate(reply.json()).by_reward()
    single = clients["http"].score([image], None, data["reward"])
    for k, reward in enumerate(data["reward"]):
        assert many[reward].model == models[reward]
        assert many[reward].results[0].score == pytest.approx(single.scores[k, 0], rel=1e-6)


def test_score_many_over_http_matches_single_calls(reward_app, clients, models):
    from services.images import encode_base64_png

    images = _images()
    body = {
        "rewards": ["aesthetic", "jpeg_compressibility"],
        "images": [encode_base64_png(i) for i in images],
    }
    reply = httpx.post(f"{reward_app.http_url}/v1/score", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    many = ScoreManyResponse.model_validate(reply.json()).by_reward()
    single = clients["http"].score(images, None, ["aesthetic", "jpeg_compressibility"])
    for k, reward in enumerate(["aesthetic", "jpeg_compressibility"]):
        assert many[reward].model == models[reward]
        got = [r.score for r in many[reward].results]
        np.testing.assert_allclose(got, single.scores[k], rtol=1e-6)


def test_rewards_listing_health_and_docs(reward_app, models):
    listing = httpx.get(f"{reward_app.http_url}/v1/rewards", timeout=30)
    assert listing.status_code == 200
    rewards = RewardsListResponse.model_validate(listing.json()).rewards
    assert sorted(r.name for r in rewards) == sorted(REWARDS)
    assert all(r.ready for r in rewards)
    by_name = {r.name: r for r in rewards}
    assert by_name["pickscore"].needs_prompt and not by_name["aesthetic"].needs_prompt
    assert by_name["pickscore"].config["variant"] == "tiny"
    assert {r.name: r.model for r in rewards} == models
    health = httpx.get(f"{reward_app.http_url}/healthz", timeout=30)
    assert health.status_code == 200 and HealthResponse.model_validate(health.json()).ready
    assert httpx.get(f"{reward_app.http_url}/docs", timeout=30).status_code == 200
    spec = httpx.get(f"{reward_app.http_url}/openapi.json", timeout=30).json()
    assert "/v1/rewards/{name}/score" in spec["paths"] and "/v1/score" in spec["paths"]


def test_grpc_health_and_score_many(reward_app, models):
    import grpc

    from services.images import encode_png
    from services.proto import reward_pb2 as pb
    from services.proto import reward_pb2_grpc

    with grpc.insecure_channel(reward_app.grpc_target) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        metadata = [("application", reward_app.app_name)]
        health = stub.Health(pb.HealthRequest(), metadata=metadata, timeout=30)
        assert health.ready and sorted(r.reward for r in health.rewards) == sorted(REWARDS)
        request = pb.ScoreManyRequest(
            rewards=["aesthetic", "ocr"],
            images=[encode_png(i) for i in _images()],
            prompts=PROMPTS,
        )
        reply = stub.ScoreMany(request, metadata=metadata, timeout=60)
    assert [r.reward for r in reply.results] == ["aesthetic", "ocr"]
    assert all(len(r.results) == 3 and not r.error for r in reply.results)
    assert reply.results[0].results[0].HasField("score")
    assert [r.model for r in reply.results] == [models["aesthetic"], models["ocr"]]


def test_dynamic_batching_groups_concurrent_callers(reward_app, models):
    """64 single-image calls at once are served in far fewer model calls."""
    from ray import serve

    handle = serve.get_deployment_handle("jpeg_compressibility", app_name=reward_app.app_name)
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    responses = [handle.score.remote([image]) for _ in range(64)]
    results = [r.result(timeout_s=60) for r in responses]
    for reply in results:  # a handle answers as the HTTP ScoreResponse, model included
        assert reply["model"] == models["jpeg_compressibility"]
        assert len(reply["results"]) == 1 and reply["results"][0]["score"] is not None
    stats = handle.batch_stats.remote().result(timeout_s=30)
    assert stats["max_batch_size_seen"] > 1
