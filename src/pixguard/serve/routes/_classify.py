"""Classification and embeddings of uploaded images."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from .._auth import Caller
from .._errors import ERROR_RESPONSES
from .._predict import decide
from .._state import Service

__all__ = ["router"]

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)


@router.post("/classify")
async def classify(
    request: Request,
    service: Service,
    caller: Caller,
    embedding: Annotated[bool, Query(description="Include each image's embedding.")] = False,
    explain: Annotated[
        bool, Query(description="Add each image's `explanation` heatmap grid.")
    ] = False,
    stop_at_block: Annotated[
        bool,
        Query(description="Video bodies: stop decoding at the first frame at the block score."),
    ] = False,
) -> JSONResponse:
    """Classify one image (raw body) or several (multipart), or one video (a
    ``video/*`` body: MP4, MOV, WebM, MKV). Per input: label, nsfw_score,
    probabilities, model, threshold, sha256 and an error if any; videos add
    ``timestamp``, ``timeline``, ``frames_classified`` and ``duration``."""
    return await decide(
        request, service, caller, embedding, explain=explain, stop_at_block=stop_at_block
    )


@router.post("/embed")
async def embed(request: Request, service: Service, caller: Caller) -> JSONResponse:
    """Embeddings (pooled pre-logits, float32 as JSON numbers) of the uploaded images."""
    return await decide(request, service, caller, True)
