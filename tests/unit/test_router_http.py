"""The ingress logic without Ray: ``RewardRouter`` over fake handles, then the FastAPI app on top.

A fake handle has the shape of a Serve deployment handle (``handle.score.remote(...)`` and
``handle.info.remote()`` return awaitables). Its default scorer decodes each image with the
shared ``services.images.decode_image``, as a replica does, so a bad image is an error for that
item only. Error bodies are parsed with the same ``ErrorResponse`` model the server uses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.errors import (
    InvalidInput,
    PayloadTooLarge,
    RewardServiceError,
    ScoringFailed,
    ScoringTimeout,
    Unauthenticated,
    Unavailable,
    UnknownReward,
)
from services.images import ImageLimits, decode_image, encode_base64_png
from services.protocol import (
    ErrorResponse,
    HealthResponse,
    RewardsListResponse,
    ScoreManyResponse,
    ScoreResponse,
)
from services.serving import router as router_module
from services.serving.auth import check_bearer, load_token
from services.serving.http import build_http_app
from services.serving.router import RewardRouter

GRAY = encode_base64_png(np.full((4, 4, 3), 51, dtype=np.uint8))  # mean pixel 51 -> 0.2
WHITE = encode_base64_png(np.full((4, 4, 3), 255, dtype=np.uint8))  # -> 1.0
TOKEN = "s3cret-token"
MAX_BODY = 4096


class ActorDiedError(Exception):
    """Stands in for ``ray.exceptions.ActorDiedError`` (mapped by class name)."""


class _Method:
    """``handle.<method>``: ``.remote(...)`` returns a coroutine, like a DeploymentResponse."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.calls: list[tuple] = []

    def remote(self, *args):
        self.calls.append(args)
        return self.fn(*args)


async def _brightness(images, prompts):
    """Decode each item on its own (as a replica does); score = mean pixel / 255."""
    results = []
    for i, item in enumerate(images):
        try:
            array = decode_image(item, i)
        except RewardServiceError as exc:
            results.append({"score": None, "error": str(exc)})
        else:
            results.append({"score": float(array.mean()) / 255.0, "error": None})
    return results


class FakeHandle:
    """A deployment handle whose ``score`` and ``info`` are async functions (or a raise)."""

    def __init__(
        self,
        score: Callable | None = None,
        *,
        ready: bool = True,
        description: str = "fake",
        info_error: BaseException | None = None,
        delay_s: float = 0.0,
    ):
        scorer = score or _brightness

        async def score_fn(images, prompts):
            if delay_s:
                await asyncio.sleep(delay_s)
            return await scorer(images, prompts)

        async def info_fn():
            if info_error is not None:
                raise info_error
            return {"ready": ready, "description": description, "config": {"variant": "tiny"}}

        self.score = _Method(score_fn)
        self.info = _Method(info_fn)


def _raising(exc: BaseException) -> Callable:
    async def score(images, prompts):
        raise exc

    return score


def _router(handles=None, needs_prompt=None, limits=None, timeout_s=5.0) -> RewardRouter:
    handles = handles if handles is not None else {"bright": FakeHandle(), "prompted": FakeHandle()}
    needs_prompt = needs_prompt if needs_prompt is not None else {"prompted": True}
    return RewardRouter(handles, needs_prompt, limits or ImageLimits(), timeout_s)


def _client(router: RewardRouter | None = None, token: str | None = None) -> TestClient:
    app = build_http_app(router or _router(), token, MAX_BODY)
    return TestClient(app, raise_server_exceptions=False)


def _error(response, status: int, code: str) -> ErrorResponse:
    """Check an error response's status and shape; return the parsed body."""
    assert response.status_code == status, response.text
    assert "error" in response.json(), f"not an ErrorResponse: {response.text}"
    body = ErrorResponse.model_validate(response.json())
    assert body.error.code == code, body
    assert body.error.message
    return body


# --------------------------------------------------------------------------- RewardRouter


def test_router_scores_and_forwards_payloads_untouched():
    handle = FakeHandle()
    router = _router({"bright": handle}, {})
    images = [GRAY, WHITE]
    response = asyncio.run(router.score("bright", images, None))
    assert isinstance(response, ScoreResponse)
    assert response.reward == "bright"
    assert response.scores() == pytest.approx([0.2, 1.0])
    ((sent_images, sent_prompts),) = handle.score.calls
    assert sent_images == images and sent_prompts is None  # not decoded in the ingress


def test_router_treats_an_empty_prompt_list_as_none():
    handle = FakeHandle()
    asyncio.run(_router({"bright": handle}, {}).score("bright", [GRAY], []))
    assert handle.score.calls[0][1] is None


def test_router_unknown_reward_lists_the_served_ones():
    router = _router()
    with pytest.raises(UnknownReward, match="served rewards: bright, prompted") as info:
        asyncio.run(router.score("nope", [GRAY]))
    assert info.value.details == {"reward": "nope", "served": ["bright", "prompted"]}


@pytest.mark.parametrize(
    ("name", "images", "prompts", "error", "words"),
    [
        ("prompted", [GRAY], None, InvalidInput, "need one prompt per image"),
        ("bright", [GRAY, GRAY], ["one"], InvalidInput, "2 images"),
        ("bright", [], None, InvalidInput, "at least one image"),
        ("bright", [GRAY] * 3, None, PayloadTooLarge, "over the limit of 2"),
        ("bright", [GRAY], ["x" * 11], PayloadTooLarge, "over the limit of 10"),
        ("bright", [GRAY], ["bad\x00prompt"], InvalidInput, r"U\+0000"),
    ],
)
def test_router_rejects_bad_requests_before_calling_a_handle(name, images, prompts, error, words):
    handle = FakeHandle()
    router = _router(
        {name: handle},
        {"prompted": True},
        limits=ImageLimits(max_images=2, max_prompt_chars=10),
    )
    with pytest.raises(error, match=words):
        asyncio.run(router.score(name, images, prompts))
    assert handle.score.calls == []


@pytest.mark.parametrize(
    ("raised", "mapped"),
    [
        (ActorDiedError("replica gone"), Unavailable),
        (ScoringTimeout("slow"), ScoringTimeout),
        (InvalidInput("image 0: bad"), InvalidInput),
        (RuntimeError("secret path /x"), ScoringFailed),
    ],
)
def test_router_maps_handle_errors(raised, mapped):
    router = _router({"bright": FakeHandle(_raising(raised))}, {})
    with pytest.raises(mapped) as info:
        asyncio.run(router.score("bright", [GRAY]))
    assert type(info.value) is mapped
    if mapped is ScoringFailed:
        assert "secret" not in info.value.message  # internal messages do not leak


def test_router_times_out_a_slow_handle():
    router = _router({"slow": FakeHandle(delay_s=5.0)}, {}, timeout_s=0.05)
    start = time.perf_counter()
    with pytest.raises(ScoringTimeout):
        asyncio.run(router.score("slow", [GRAY]))
    assert time.perf_counter() - start < 2.0


def test_router_rejects_a_result_count_mismatch():
    async def short(images, prompts):
        return [{"score": 1.0}]

    router = _router({"short": FakeHandle(short)}, {})
    with pytest.raises(ScoringFailed, match="1 results for 2 images"):
        asyncio.run(router.score("short", [GRAY, GRAY]))


def test_score_many_keeps_order_runs_concurrently_and_isolates_failures():
    started: set[str] = set()

    def rendezvous(name: str) -> Callable:
        """Answers only once both rendezvous rewards are in flight (deadlocks if sequential)."""

        async def score(images, prompts):
            started.add(name)
            while len(started) < 2:
                await asyncio.sleep(0.005)
            return await _brightness(images, prompts)

        return score

    handles = {
        "slow_a": FakeHandle(rendezvous("slow_a")),
        "slow_b": FakeHandle(rendezvous("slow_b")),
        "dead": FakeHandle(_raising(ActorDiedError("gone"))),
        "broken": FakeHandle(_raising(ValueError("tensor dump"))),
    }
    router = _router(handles, {}, timeout_s=2.0)  # sequential calls would time out
    names = ["slow_b", "dead", "slow_a", "broken"]
    response = asyncio.run(router.score_many(names, [GRAY, WHITE]))
    assert isinstance(response, ScoreManyResponse)
    assert [entry.reward for entry in response.results] == names
    by = response.by_reward()
    for ok in ("slow_a", "slow_b"):
        assert by[ok].error is None
        assert [r.score for r in by[ok].results] == pytest.approx([0.2, 1.0])
    assert by["dead"].results == [] and by["dead"].error.startswith("unavailable: ")
    assert by["broken"].error == "scoring_failed: internal error (ValueError)"


def test_score_many_request_level_errors_fail_the_whole_request():
    router = _router()
    with pytest.raises(InvalidInput, match="at least one reward"):
        asyncio.run(router.score_many([], [GRAY]))
    with pytest.raises(UnknownReward):
        asyncio.run(router.score_many(["bright", "nope"], [GRAY]))
    with pytest.raises(InvalidInput, match="prompted"):
        asyncio.run(router.score_many(["bright", "prompted"], [GRAY]))


def test_list_rewards_and_health(monkeypatch):
    monkeypatch.setattr(router_module, "_INFO_TIMEOUT_S", 0.05)

    class Hung:
        score = FakeHandle().score

        class info:  # noqa: N801 - the handle's method
            @staticmethod
            def remote():
                return asyncio.sleep(5)

    handles = {
        "zeta": FakeHandle(description="last"),
        "alpha": FakeHandle(ready=False),
        "dead": FakeHandle(info_error=ActorDiedError("gone")),
        "hung": Hung(),
    }
    router = _router(handles, {"zeta": True})
    listing = asyncio.run(router.list_rewards())
    assert isinstance(listing, RewardsListResponse)
    assert [r.name for r in listing.rewards] == ["alpha", "dead", "hung", "zeta"]
    zeta = listing.rewards[3]
    assert (zeta.needs_prompt, zeta.description, zeta.ready) == (True, "last", True)
    assert zeta.config == {"variant": "tiny"}
    assert [r.ready for r in listing.rewards] == [False, False, False, True]
    health = asyncio.run(router.health())
    assert not health.ready
    by = {h.reward: h for h in health.rewards}
    assert by["alpha"].error is None and not by["alpha"].ready
    assert by["dead"].error.startswith("unavailable: ")
    assert by["hung"].error.startswith("timeout: ")
    assert by["zeta"].ready
    assert asyncio.run(_router({"zeta": FakeHandle()}, {}).health()).ready


# --------------------------------------------------------------------------- HTTP endpoints


def test_healthz_is_200_when_ready_and_503_when_not():
    response = _client().get("/healthz")
    assert response.status_code == 200
    assert HealthResponse.model_validate(response.json()).ready
    response = _client(_router({"a": FakeHandle(), "b": FakeHandle(ready=False)}, {})).get(
        "/healthz"
    )
    assert response.status_code == 503
    health = HealthResponse.model_validate(response.json())
    assert not health.ready and [h.ready for h in health.rewards] == [True, False]


def test_list_rewards_endpoint():
    response = _client().get("/v1/rewards")
    assert response.status_code == 200
    listing = RewardsListResponse.model_validate(response.json())
    assert [(r.name, r.needs_prompt) for r in listing.rewards] == [
        ("bright", False),
        ("prompted", True),
    ]


def test_score_endpoint_returns_one_result_per_image():
    response = _client().post(
        "/v1/rewards/prompted/score", json={"images": [GRAY, WHITE], "prompts": ["a", "b"]}
    )
    assert response.status_code == 200, response.text
    body = ScoreResponse.model_validate(response.json())
    assert body.reward == "prompted"
    assert body.scores() == pytest.approx([0.2, 1.0])


def test_a_bad_base64_image_is_an_item_error_not_a_request_error():
    response = _client().post(
        "/v1/rewards/bright/score", json={"images": [GRAY, "not base64!", WHITE]}
    )
    assert response.status_code == 200, response.text
    results = ScoreResponse.model_validate(response.json()).results
    assert [r.score for r in results] == pytest.approx([0.2, None, 1.0])
    assert "image 1" in results[1].error and "base64" in results[1].error
    assert results[0].error is None and results[2].error is None


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "images"),
        ({"images": GRAY}, "images"),
        ({"images": [GRAY], "extra": 1}, "extra"),
        ({"images": [GRAY, GRAY], "prompts": ["only one"]}, "prompts"),
        ({"images": []}, "at least one image"),
        ({"images": [GRAY], "prompts": ["bad\x07"]}, "U+0007"),
    ],
)
def test_schema_problems_are_422_naming_the_field(body, words):
    response = _client().post("/v1/rewards/bright/score", json=body)
    error = _error(response, 422, "invalid_input")
    assert words in error.error.message


def test_malformed_json_is_422():
    response = _client().post(
        "/v1/rewards/bright/score",
        content=b'{"images": [',
        headers={"content-type": "application/json"},
    )
    _error(response, 422, "invalid_input")


def test_too_many_images_is_413_from_the_schema_and_from_the_router():
    response = _client().post("/v1/rewards/bright/score", json={"images": ["x"] * 257})
    _error(response, 413, "payload_too_large")
    small = _router(limits=ImageLimits(max_images=2))
    response = _client(small).post("/v1/rewards/bright/score", json={"images": [GRAY] * 3})
    _error(response, 413, "payload_too_large")


def test_unknown_reward_is_404():
    response = _client().post("/v1/rewards/nope/score", json={"images": [GRAY]})
    body = _error(response, 404, "unknown_reward")
    assert body.error.details["served"] == ["bright", "prompted"]
    response = _client().post("/v1/score", json={"rewards": ["bright", "nope"], "images": [GRAY]})
    _error(response, 404, "unknown_reward")


def test_missing_prompts_for_a_prompted_reward_is_422():
    response = _client().post("/v1/rewards/prompted/score", json={"images": [GRAY]})
    body = _error(response, 422, "invalid_input")
    assert body.error.details == {"rewards": ["prompted"]}


def test_score_many_endpoint_with_a_partial_failure():
    router = _router(
        {"bright": FakeHandle(), "dead": FakeHandle(_raising(ActorDiedError("x")))}, {}
    )
    response = _client(router).post(
        "/v1/score", json={"rewards": ["dead", "bright"], "images": [GRAY]}
    )
    assert response.status_code == 200, response.text
    body = ScoreManyResponse.model_validate(response.json())
    assert [entry.reward for entry in body.results] == ["dead", "bright"]
    assert body.results[0].error.startswith("unavailable: ") and body.results[0].results == []
    assert body.results[1].error is None
    assert [r.score for r in body.results[1].results] == pytest.approx([0.2])


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"rewards": [], "images": [GRAY]}, "rewards"),
        ({"rewards": ["bright", "bright"], "images": [GRAY]}, "more than once: bright"),
        ({"rewards": [""], "images": [GRAY]}, "non-empty"),
        ({"images": [GRAY]}, "rewards"),
    ],
)
def test_score_many_schema_problems_are_422(body, words):
    response = _client().post("/v1/score", json=body)
    assert words in _error(response, 422, "invalid_input").error.message


def test_a_handle_timeout_is_504():
    router = _router({"slow": FakeHandle(delay_s=5.0)}, {}, timeout_s=0.05)
    response = _client(router).post("/v1/rewards/slow/score", json={"images": [GRAY]})
    _error(response, 504, "timeout")


def test_a_dead_actor_is_503():
    router = _router({"dead": FakeHandle(_raising(ActorDiedError("gone")))}, {})
    response = _client(router).post("/v1/rewards/dead/score", json={"images": [GRAY]})
    body = _error(response, 503, "unavailable")
    assert "ActorDiedError" in body.error.message


def test_an_unexpected_handle_error_is_500_without_leaking_its_message():
    router = _router({"bad": FakeHandle(_raising(RuntimeError("/secret/path")))}, {})
    response = _client(router).post("/v1/rewards/bad/score", json={"images": [GRAY]})
    body = _error(response, 500, "scoring_failed")
    assert "secret" not in response.text
    assert body.error.message == "internal error (RuntimeError)"


# --------------------------------------------------------------------------- body size limit


def test_a_declared_oversized_body_is_413():
    payload = b'{"images": ["' + b"A" * MAX_BODY + b'"]}'
    response = _client().post(
        "/v1/rewards/bright/score", content=payload, headers={"content-type": "application/json"}
    )
    _error(response, 413, "payload_too_large")


def _chunks(total: int):
    yield b'{"images": ["'
    for _ in range(total // 512):
        yield b"A" * 512
    yield b'"]}'


def test_a_streamed_body_under_the_limit_passes():
    response = _client().post(
        "/v1/rewards/bright/score",
        content=_chunks(1024),
        headers={"content-type": "application/json"},
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 200  # a non-image payload: an item error, not a 4xx
    assert ScoreResponse.model_validate(response.json()).results[0].error


def test_a_streamed_oversized_body_is_413():
    response = _client().post(
        "/v1/rewards/bright/score",
        content=_chunks(4 * MAX_BODY),
        headers={"content-type": "application/json"},
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    _error(response, 413, "payload_too_large")


# --------------------------------------------------------------------------- authentication


def test_auth_required_on_every_endpoint_but_healthz():
    client = _client(token=TOKEN)
    score = {"images": [GRAY]}
    for method, path, body in [
        ("get", "/v1/rewards", None),
        ("post", "/v1/rewards/bright/score", score),
        ("post", "/v1/score", {"rewards": ["bright"], **score}),
    ]:
        for headers in [{}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}]:
            response = client.request(method, path, json=body, headers=headers)
            _error(response, 401, "unauthenticated")
        ok = client.request(method, path, json=body, headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200, ok.text
    assert client.get("/healthz").status_code == 200


def test_auth_runs_before_routing_and_validation():
    client = _client(token=TOKEN)
    _error(client.post("/v1/rewards/nope/score", json={}), 401, "unauthenticated")
    headers = {"authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
    _error(client.post("/v1/rewards/nope/score", json={}, headers=headers), 422, "invalid_input")


def test_a_non_ascii_authorization_header_is_401():
    response = _client(token=TOKEN).get("/v1/rewards", headers={"authorization": b"Bearer \xe9"})
    _error(response, 401, "unauthenticated")


def test_an_unknown_path_is_an_error_response():
    _error(_client().get("/v2/nothing"), 404, "not_found")


# --------------------------------------------------------------------------- auth helpers


def test_load_token_file_wins_over_the_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("APEX_TEST_TOKEN", "from-env")
    path = tmp_path / "token"
    path.write_text("  from-file\n")
    assert load_token("APEX_TEST_TOKEN", str(path)) == "from-file"
    assert load_token("APEX_TEST_TOKEN", None) == "from-env"
    monkeypatch.setenv("APEX_TEST_TOKEN", "  \n")
    assert load_token("APEX_TEST_TOKEN", None) is None
    monkeypatch.delenv("APEX_TEST_TOKEN")
    assert load_token("APEX_TEST_TOKEN", None) is None
    assert load_token(None, None) is None


def test_load_token_file_errors_name_the_field(tmp_path, monkeypatch):
    monkeypatch.setenv("APEX_TEST_TOKEN", "from-env")  # no silent fallback to the env var
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    with pytest.raises(ValueError, match="auth_token_file: .* is empty"):
        load_token("APEX_TEST_TOKEN", str(empty))
    with pytest.raises(ValueError, match="auth_token_file: .* does not exist"):
        load_token("APEX_TEST_TOKEN", str(tmp_path / "missing"))


@pytest.mark.parametrize(
    ("header", "token", "ok"),
    [
        (None, None, True),
        ("anything", None, True),
        (f"Bearer {TOKEN}", TOKEN, True),
        (f"BEARER  {TOKEN} ", TOKEN, True),
        (None, TOKEN, False),
        ("", TOKEN, False),
        (TOKEN, TOKEN, False),
        (f"Basic {TOKEN}", TOKEN, False),
        ("Bearer wrong", TOKEN, False),
        ("Bearer ", TOKEN, False),
        (f"Bearer {TOKEN}x", TOKEN, False),
    ],
)
def test_check_bearer(header, token, ok):
    if ok:
        check_bearer(header, token)
    else:
        with pytest.raises(Unauthenticated):
            check_bearer(header, token)
