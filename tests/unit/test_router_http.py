"""The ingress logic without Ray: ``RewardRouter`` over fake handles, then the FastAPI app on top.

The fake handles (``tests/unit/fake_serving.py``) answer as replicas do; error bodies are parsed
with the same ``ErrorResponse`` model the server uses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from services.errors import (
    InvalidInput,
    PayloadTooLarge,
    ScoringFailed,
    ScoringTimeout,
    Unauthenticated,
    Unavailable,
    UnknownReward,
)
from services.images import ImageLimits
from services.protocol import (
    HealthResponse,
    RewardsListResponse,
    ScoreManyResponse,
    ScoreResponse,
)
from services.serving import router as router_module
from services.serving.auth import check_bearer, load_token
from tests.unit.fake_serving import (
    FAKE_MODEL,
    GRAY,
    MAX_BODY,
    TOKEN,
    WHITE,
    ActorDiedError,
    FakeHandle,
    brightness,
    error_body,
    make_client,
    make_router,
    raising,
)

# --------------------------------------------------------------------------- RewardRouter


def test_router_scores_and_forwards_payloads_untouched():
    handle = FakeHandle()
    router = make_router({"bright": handle}, {})
    images = [GRAY, WHITE]
    response = asyncio.run(router.score("bright", images, None))
    assert isinstance(response, ScoreResponse)
    assert response.reward == "bright"
    assert response.scores() == pytest.approx([0.2, 1.0])
    ((sent_images, sent_prompts),) = handle.score.calls
    assert sent_images == images and sent_prompts is None  # not decoded in the ingress


def test_router_treats_an_empty_prompt_list_as_none():
    handle = FakeHandle()
    asyncio.run(make_router({"bright": handle}, {}).score("bright", [GRAY], []))
    assert handle.score.calls[0][1] is None


def test_router_unknown_reward_lists_the_served_ones():
    router = make_router()
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
    router = make_router(
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
    router = make_router({"bright": FakeHandle(raising(raised))}, {})
    with pytest.raises(mapped) as info:
        asyncio.run(router.score("bright", [GRAY]))
    assert type(info.value) is mapped
    if mapped is ScoringFailed:
        assert "secret" not in info.value.message  # internal messages do not leak


def test_router_times_out_a_slow_handle():
    router = make_router({"slow": FakeHandle(delay_s=5.0)}, {}, timeout_s=0.05)
    start = time.perf_counter()
    with pytest.raises(ScoringTimeout):
        asyncio.run(router.score("slow", [GRAY]))
    assert time.perf_counter() - start < 2.0


def test_every_answer_names_the_model_that_scored():
    handles = {"bright": FakeHandle(), "other": FakeHandle(model="another model")}
    router = make_router(handles, {})
    assert asyncio.run(router.score("bright", [GRAY])).model == FAKE_MODEL
    many = asyncio.run(router.score_many(["other", "bright"], [GRAY])).by_reward()
    assert (many["other"].model, many["bright"].model) == ("another model", FAKE_MODEL)
    listing = asyncio.run(router.list_rewards()).rewards
    assert [r.model for r in listing] == [FAKE_MODEL, "another model"]
    client = make_client(router)
    reply = client.post("/v1/rewards/other/score", json={"images": [GRAY]})
    assert ScoreResponse.model_validate(reply.json()).model == "another model"
    reply = client.post("/v1/score", json={"rewards": ["bright"], "images": [GRAY]})
    assert ScoreManyResponse.model_validate(reply.json()).results[0].model == FAKE_MODEL


def test_router_rejects_a_result_count_mismatch():
    async def short(images, prompts):
        return [{"score": 1.0}]

    router = make_router({"short": FakeHandle(short)}, {})
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
            return await brightness(images, prompts)

        return score

    handles = {
        "slow_a": FakeHandle(rendezvous("slow_a")),
        "slow_b": FakeHandle(rendezvous("slow_b")),
        "dead": FakeHandle(raising(ActorDiedError("gone"))),
        "broken": FakeHandle(raising(ValueError("tensor dump"))),
    }
    router = make_router(handles, {}, timeout_s=2.0)  # sequential calls would time out
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
    router = make_router()
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
    router = make_router(handles, {"zeta": True})
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
    assert asyncio.run(make_router({"zeta": FakeHandle()}, {}).health()).ready


# --------------------------------------------------------------------------- HTTP endpoints


def test_healthz_is_200_when_ready_and_503_when_not():
    response = make_client().get("/healthz")
    assert response.status_code == 200
    assert HealthResponse.model_validate(response.json()).ready
    response = make_client(make_router({"a": FakeHandle(), "b": FakeHandle(ready=False)}, {})).get(
        "/healthz"
    )
    assert response.status_code == 503
    health = HealthResponse.model_validate(response.json())
    assert not health.ready and [h.ready for h in health.rewards] == [True, False]


def test_list_rewards_endpoint():
    response = make_client().get("/v1/rewards")
    assert response.status_code == 200
    listing = RewardsListResponse.model_validate(response.json())
    assert [(r.name, r.needs_prompt) for r in listing.rewards] == [
        ("bright", False),
        ("prompted", True),
    ]


def test_score_endpoint_returns_one_result_per_image():
    response = make_client().post(
        "/v1/rewards/prompted/score", json={"images": [GRAY, WHITE], "prompts": ["a", "b"]}
    )
    assert response.status_code == 200, response.text
    body = ScoreResponse.model_validate(response.json())
    assert body.reward == "prompted"
    assert body.scores() == pytest.approx([0.2, 1.0])


def test_a_bad_base64_image_is_an_item_error_not_a_request_error():
    response = make_client().post(
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
    response = make_client().post("/v1/rewards/bright/score", json=body)
    error = error_body(response, 422, "invalid_input")
    assert words in error.error.message


def test_malformed_json_is_422():
    response = make_client().post(
        "/v1/rewards/bright/score",
        content=b'{"images": [',
        headers={"content-type": "application/json"},
    )
    error_body(response, 422, "invalid_input")


def test_too_many_images_is_413_from_the_schema_and_from_the_router():
    response = make_client().post("/v1/rewards/bright/score", json={"images": ["x"] * 257})
    error_body(response, 413, "payload_too_large")
    small = make_router(limits=ImageLimits(max_images=2))
    response = make_client(small).post("/v1/rewards/bright/score", json={"images": [GRAY] * 3})
    error_body(response, 413, "payload_too_large")


def test_unknown_reward_is_404():
    response = make_client().post("/v1/rewards/nope/score", json={"images": [GRAY]})
    body = error_body(response, 404, "unknown_reward")
    assert body.error.details["served"] == ["bright", "prompted"]
    response = make_client().post(
        "/v1/score", json={"rewards": ["bright", "nope"], "images": [GRAY]}
    )
    error_body(response, 404, "unknown_reward")


def test_missing_prompts_for_a_prompted_reward_is_422():
    response = make_client().post("/v1/rewards/prompted/score", json={"images": [GRAY]})
    body = error_body(response, 422, "invalid_input")
    assert body.error.details == {"rewards": ["prompted"]}


def test_score_many_endpoint_with_a_partial_failure():
    router = make_router(
        {"bright": FakeHandle(), "dead": FakeHandle(raising(ActorDiedError("x")))}, {}
    )
    response = make_client(router).post(
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
    response = make_client().post("/v1/score", json=body)
    assert words in error_body(response, 422, "invalid_input").error.message


def test_a_handle_timeout_is_504():
    router = make_router({"slow": FakeHandle(delay_s=5.0)}, {}, timeout_s=0.05)
    response = make_client(router).post("/v1/rewards/slow/score", json={"images": [GRAY]})
    error_body(response, 504, "timeout")


def test_a_dead_actor_is_503():
    router = make_router({"dead": FakeHandle(raising(ActorDiedError("gone")))}, {})
    response = make_client(router).post("/v1/rewards/dead/score", json={"images": [GRAY]})
    body = error_body(response, 503, "unavailable")
    assert "ActorDiedError" in body.error.message


def test_an_unexpected_handle_error_is_500_without_leaking_its_message():
    router = make_router({"bad": FakeHandle(raising(RuntimeError("/secret/path")))}, {})
    response = make_client(router).post("/v1/rewards/bad/score", json={"images": [GRAY]})
    body = error_body(response, 500, "scoring_failed")
    assert "secret" not in response.text
    assert body.error.message == "internal error (RuntimeError)"


# --------------------------------------------------------------------------- body size limit


def test_a_declared_oversized_body_is_413():
    payload = b'{"images": ["' + b"A" * MAX_BODY + b'"]}'
    response = make_client().post(
        "/v1/rewards/bright/score", content=payload, headers={"content-type": "application/json"}
    )
    error_body(response, 413, "payload_too_large")


def _chunks(total: int):
    yield b'{"images": ["'
    for _ in range(total // 512):
        yield b"A" * 512
    yield b'"]}'


def test_a_streamed_body_under_the_limit_passes():
    response = make_client().post(
        "/v1/rewards/bright/score",
        content=_chunks(1024),
        headers={"content-type": "application/json"},
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 200  # a non-image payload: an item error, not a 4xx
    assert ScoreResponse.model_validate(response.json()).results[0].error


def test_a_streamed_oversized_body_is_413():
    response = make_client().post(
        "/v1/rewards/bright/score",
        content=_chunks(4 * MAX_BODY),
        headers={"content-type": "application/json"},
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    error_body(response, 413, "payload_too_large")


# --------------------------------------------------------------------------- authentication


def test_auth_required_on_every_endpoint_but_healthz():
    client = make_client(token=TOKEN)
    score = {"images": [GRAY]}
    for method, path, body in [
        ("get", "/v1/rewards", None),
        ("post", "/v1/rewards/bright/score", score),
        ("post", "/v1/score", {"rewards": ["bright"], **score}),
    ]:
        for headers in [{}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}]:
            response = client.request(method, path, json=body, headers=headers)
            error_body(response, 401, "unauthenticated")
        ok = client.request(method, path, json=body, headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200, ok.text
    assert client.get("/healthz").status_code == 200


def test_auth_runs_before_routing_and_validation():
    client = make_client(token=TOKEN)
    error_body(client.post("/v1/rewards/nope/score", json={}), 401, "unauthenticated")
    headers = {"authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
    error_body(
        client.post("/v1/rewards/nope/score", json={}, headers=headers), 422, "invalid_input"
    )


def test_a_non_ascii_authorization_header_is_401():
    response = make_client(token=TOKEN).get(
        "/v1/rewards", headers={"authorization": b"Bearer \xe9"}
    )
    error_body(response, 401, "unauthenticated")


def test_an_unknown_path_is_an_error_response():
    error_body(make_client().get("/v2/nothing"), 404, "not_found")


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
