"""Similarity search over the service's index, and adding to it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from ...index import Index
from .._auth import AdminCaller, Caller
from .._body import read_images
from .._errors import ERROR_RESPONSES, ServiceError
from .._predict import predict
from .._state import Service, ServiceState

__all__ = ["router"]

router = APIRouter(prefix="/v1/index", responses=ERROR_RESPONSES)


def _index(service: ServiceState) -> Index:
    if service.index is None:
        raise ServiceError(404, "no_index", "the service runs without an index (--index DIR)")
    return service.index


@router.post("/search")
async def index_search(
    request: Request,
    service: Service,
    caller: Caller,
    k: Annotated[int, Query(ge=1, le=1000)] = 10,
    min_similarity: float | None = None,
) -> dict[str, Any]:
    index = _index(service)
    (_, data), *_ = await read_images(request, service)
    prediction = (await predict(service, [("body", data)]))[0]
    prediction.raise_for_error()
    embedding = prediction.embedding
    assert embedding is not None  # raise_for_error() passed: the model gave one

    def search() -> list[dict[str, Any]]:
        with service.index_lock:
            return [
                h.to_dict() for h in index.search(embedding, k=k, min_similarity=min_similarity)
            ]

    return {
        "request_id": request.state.request_id,
        "hits": await service.in_store(search),
    }


@router.post("/add")
async def index_add(
    request: Request, service: Service, caller: AdminCaller, tags: str = ""
) -> dict[str, Any]:
    index = _index(service)
    images = await read_images(request, service)

    def add() -> dict[str, Any]:
        with service.index_lock:
            report = index.add_images(
                [data for _, data in images],
                service.classifier,
                tags=[t for t in tags.split(",") if t],
            )
        return report.to_dict()

    return {
        "request_id": request.state.request_id,
        **await service.in_store(add),
    }
