"""The Serve ingress of the reward app: FastAPI over HTTP and ``RewardService`` over gRPC.

Both paths call the same :class:`RewardRouter`, which forwards to the reward deployments
through handles, so HTTP, gRPC and in-cluster handles reach the same scoring code. gRPC
methods are named as the RPCs of ``protos/reward/v1/reward.proto`` (Serve's gRPC proxy calls
the ingress method with the RPC's name).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI

from services.config import IngressConfig
from services.errors import as_service_error, to_grpc_status
from services.images import ImageLimits
from services.proto import reward_pb2 as pb
from services.protocol import request_images, to_proto
from services.serving.auth import check_bearer, load_token
from services.serving.http import build_http_app
from services.serving.router import RewardRouter

logger = logging.getLogger(__name__)


class RewardIngress:
    """Plain class; ``build_app`` wraps it with ``serve.ingress`` and ``serve.deployment``."""

    def __init__(
        self,
        handles: dict[str, Any],
        needs_prompt: dict[str, bool],
        ingress: dict[str, Any],
        limits: dict[str, Any],
    ):
        config = IngressConfig.model_validate(ingress)
        self.token = load_token(config.auth_token_env, config.auth_token_file)
        self.max_body_bytes = config.max_body_bytes
        self.router = RewardRouter(
            handles, needs_prompt, ImageLimits.model_validate(limits), config.request_timeout_s
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve calls this once per replica to get the HTTP application."""
        return build_http_app(self.router, self.token, self.max_body_bytes)

    async def Score(self, request: pb.ScoreRequest, grpc_context=None) -> pb.ScoreResponse:  # noqa: N802
        """gRPC ``Score``: one reward over a batch of encoded images."""
        try:
            self._authenticate(grpc_context)
            prompts = list(request.prompts) or None
            images = request_images(request)
            response = await self.router.score(request.reward, images, prompts)
            return to_proto(response)
        except Exception as exc:
            return self._fail(exc, grpc_context, pb.ScoreResponse())

    async def ScoreMany(  # noqa: N802
        self, request: pb.ScoreManyRequest, grpc_context=None
    ) -> pb.ScoreManyResponse:
        """gRPC ``ScoreMany``: several rewards over the same batch."""
        try:
            self._authenticate(grpc_context)
            prompts = list(request.prompts) or None
            response = await self.router.score_many(
                list(request.rewards), request_images(request), prompts
            )
            return to_proto(response)
        except Exception as exc:
            return self._fail(exc, grpc_context, pb.ScoreManyResponse())

    async def Health(self, request: pb.HealthRequest, grpc_context=None) -> pb.HealthResponse:  # noqa: N802
        """gRPC ``Health``: readiness of every served reward."""
        try:
            self._authenticate(grpc_context)
            return to_proto(await self.router.health())
        except Exception as exc:
            return self._fail(exc, grpc_context, pb.HealthResponse())

    def _authenticate(self, grpc_context) -> None:
        if self.token is None:
            return
        metadata = dict(grpc_context.invocation_metadata()) if grpc_context is not None else {}
        check_bearer(metadata.get("authorization"), self.token)

    @staticmethod
    def _fail(exc: Exception, grpc_context, empty):
        err = as_service_error(exc)
        if err.http_status >= 500:
            logger.warning("gRPC request failed: %s", err.message)
        code, message = to_grpc_status(err)
        if grpc_context is None:
            raise err
        grpc_context.set_code(code)
        grpc_context.set_details(message)
        return empty
