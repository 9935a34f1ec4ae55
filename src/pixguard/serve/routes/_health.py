"""Liveness, readiness, metrics and the loaded model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ...models import list_models
from .._auth import Caller
from .._errors import ERROR_RESPONSES
from .._state import Service

__all__ = ["router"]

router = APIRouter(responses=ERROR_RESPONSES)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "Not ready", "content": {"application/json": {}}}},
)
async def readyz(request: Request) -> JSONResponse:
    service = getattr(request.app.state, "service", None)
    ready = bool(service and service.healthy)
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get(
    "/metrics",
    responses={200: {"description": "Prometheus metrics", "content": {"text/plain": {}}}},
)
async def metrics(service: Service, caller: Caller) -> Response:
    """Prometheus metrics (behind the same auth as every other route)."""
    service.metrics.queue_depth.set(service.batcher.depth)
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
async def models(service: Service, caller: Caller) -> dict[str, Any]:
    spec = service.classifier.spec
    return {
        "loaded": {
            "name": spec.name,
            "runtime": service.classifier.runtime_name,
            "threshold": service.classifier.threshold,
            "labels": list(spec.label_names),
            "nsfw_labels": list(spec.nsfw_labels),
            "embedding_dim": spec.embedding_dim,
        },
        "registry": [
            {
                "name": s.name,
                "source": f"{s.source}:{s.location}",
                "architecture": s.architecture,
            }
            for s in list_models()
        ],
    }
