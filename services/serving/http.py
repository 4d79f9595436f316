"""The HTTP API: a thin FastAPI router over :class:`RewardRouter` (OpenAPI docs at ``/docs``).

Endpoints: ``GET /healthz``, ``GET /v1/rewards``, ``POST /v1/rewards/{name}/score``,
``POST /v1/score``. Every error is a JSON ``ErrorResponse`` with a 4xx/5xx status chosen by
:func:`services.errors.to_http`, the one mapping shared with gRPC.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from services.errors import (
    InvalidInput,
    PayloadTooLarge,
    RewardServiceError,
    from_validation_error,
    to_http,
)
from services.proto import reward_pb2 as pb
from services.protocol import (
    ErrorResponse,
    HealthResponse,
    RewardsListResponse,
    ScoreManyRequest,
    ScoreManyResponse,
    ScoreRequest,
    ScoreResponse,
    request_images,
)
from services.serving.auth import check_bearer
from services.serving.bodies import install_openapi, read_score_body, score_body_openapi
from services.serving.router import RewardRouter

logger = logging.getLogger(__name__)
_ERRORS = {code: {"model": ErrorResponse} for code in (401, 404, 413, 422, 500, 503, 504)}
_OPEN_PATHS = frozenset({"/healthz"})
_JSON = "send a UTF-8 encoded JSON object"


class BodySizeLimit:
    """ASGI middleware: a body over ``max_bytes`` (declared or streamed) gets 413.

    The body is buffered (up to the limit) before the app sees it, so an oversized chunked
    body is refused by this middleware instead of failing inside FastAPI's body parsing.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer the request body, refusing it past the limit, then replay it to the app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send) -> None:
        message = f"request body over the limit of {self.max_bytes} bytes"
        status, body = to_http(PayloadTooLarge(message))
        await JSONResponse(body, status_code=status)({"type": "http"}, None, send)


def build_http_app(router: RewardRouter, token: str | None, max_body_bytes: int) -> FastAPI:
    """The FastAPI application of the ingress, wired to ``router``."""
    app = FastAPI(
        title="APEX reward services",
        version="1",
        description="Reward models for text-to-image alignment, served by Ray Serve.",
    )

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        if request.url.path not in _OPEN_PATHS:
            try:
                check_bearer(request.headers.get("authorization"), token)
            except RewardServiceError as exc:
                status, body = to_http(exc)
                return JSONResponse(body, status_code=status)
        return await call_next(request)

    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)

    @app.exception_handler(RewardServiceError)
    async def _service_error(_: Request, exc: RewardServiceError) -> JSONResponse:
        status, body = to_http(exc)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not read the body (e.g. JSON not UTF-8)
            status, body = to_http(InvalidInput(f"invalid request body: {exc.detail}; {_JSON}"))
            return JSONResponse(body, status_code=status)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        body = {"error": {"code": code, "message": str(exc.detail), "details": {}}}
        # keep Starlette's headers: a 405 must list the allowed methods (RFC 9110 Allow)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, body = to_http(from_validation_error(exc.errors()))
        return JSONResponse(body, status_code=status)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error in the HTTP ingress")
        status, body = to_http(exc)
        return JSONResponse(body, status_code=status)

    @app.get("/healthz", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def healthz() -> JSONResponse:
        """Ready when every reward replica answers with a loaded model."""
        health = await router.health()
        return JSONResponse(health.model_dump(), status_code=200 if health.ready else 503)

    @app.get("/v1/rewards", response_model=RewardsListResponse, responses=_ERRORS)
    async def list_rewards() -> RewardsListResponse:
        """The served rewards: names, configs, whether they need prompts, readiness."""
        return await router.list_rewards()

    @app.post(
        "/v1/rewards/{name}/score",
        response_model=ScoreResponse,
        responses=_ERRORS,
        openapi_extra=score_body_openapi(ScoreRequest, pb.ScoreRequest),
    )
    async def score(name: str, http_request: Request) -> ScoreResponse:
        """Score a batch of images with one reward (JSON, protobuf or multipart body)."""
        request = await read_score_body(http_request, ScoreRequest, pb.ScoreRequest, router.limits)
        return await router.score(name, request_images(request), _prompts(request))

    @app.post(
        "/v1/score",
        response_model=ScoreManyResponse,
        responses=_ERRORS,
        openapi_extra=score_body_openapi(ScoreManyRequest, pb.ScoreManyRequest),
    )
    async def score_many(http_request: Request) -> ScoreManyResponse:
        """Score the same images with several rewards in one call (JSON, protobuf or multipart
        body)."""
        request = await read_score_body(
            http_request, ScoreManyRequest, pb.ScoreManyRequest, router.limits
        )
        rewards = list(request.rewards)
        return await router.score_many(rewards, request_images(request), _prompts(request))

    install_openapi(app, [ScoreRequest, ScoreManyRequest])
    return app


def _prompts(request) -> list[str] | None:
    """The prompts of a pydantic or proto request; ``None`` when there are none."""
    return list(request.prompts) if request.prompts else None
