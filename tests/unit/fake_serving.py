"""Fakes of the Serve pieces the ingress talks to, shared by the ingress unit tests.

A fake handle has the shape of a Serve deployment handle (``handle.score.remote(...)`` and
``handle.info.remote()`` return awaitables) and answers as a replica does: ``{"reward",
"model", "results"}``. Its default scorer decodes each image with the shared
``services.images.decode_image``, so a bad image is an error for that item only. Error bodies
are parsed with the same ``ErrorResponse`` model the server uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
from fastapi.testclient import TestClient

from services.errors import RewardServiceError
from services.images import ImageLimits, decode_image, encode_base64_png
from services.protocol import ErrorResponse
from services.serving.http import build_http_app
from services.serving.router import RewardRouter

FAKE_MODEL = "fake brightness model (test)"
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


async def brightness(images, prompts):
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
        model: str = FAKE_MODEL,
        info_error: BaseException | None = None,
        delay_s: float = 0.0,
    ):
        scorer = score or brightness

        async def score_fn(images, prompts):
            """A replica's answer: ``{"reward", "model", "results"}`` around the scorer's list."""
            if delay_s:
                await asyncio.sleep(delay_s)
            return {"reward": "fake", "model": model, "results": await scorer(images, prompts)}

        async def info_fn():
            if info_error is not None:
                raise info_error
            config = {"variant": "tiny"}
            return {"ready": ready, "description": description, "model": model, "config": config}

        self.score = _Method(score_fn)
        self.info = _Method(info_fn)


def raising(exc: BaseException) -> Callable:
    """A scorer that raises ``exc``, as a failing replica call does."""

    async def score(images, prompts):
        raise exc

    return score


def make_router(handles=None, needs_prompt=None, limits=None, timeout_s=5.0) -> RewardRouter:
    """A router over fake handles (by default ``bright`` and the prompt-reading ``prompted``)."""
    handles = handles if handles is not None else {"bright": FakeHandle(), "prompted": FakeHandle()}
    needs_prompt = needs_prompt if needs_prompt is not None else {"prompted": True}
    return RewardRouter(handles, needs_prompt, limits or ImageLimits(), timeout_s)


def make_client(router: RewardRouter | None = None, token: str | None = None) -> TestClient:
    """The real FastAPI app over ``router``, called in-process."""
    app = build_http_app(router or make_router(), token, MAX_BODY)
    return TestClient(app, raise_server_exceptions=False)


def error_body(response, status: int, code: str) -> ErrorResponse:
    """Check an error response's status and shape; return the parsed body."""
    assert response.status_code == status, response.text
    assert "error" in response.json(), f"not an ErrorResponse: {response.text}"
    body = ErrorResponse.model_validate(response.json())
    assert body.error.code == code, body
    assert body.error.message
    return body
