"""The review queue over HTTP: claim, decide (one or in bulk), undo, stats, appeals."""

from __future__ import annotations

import asyncio
import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field, model_validator

from ..._exceptions import ExplanationError, PixguardError
from ...classify import Classifier
from ...review import MAX_BULK, MAX_CLAIM, DecisionRecord, ItemState
from .._auth import Caller, ReviewerCaller
from .._errors import ERROR_RESPONSES, ServiceError
from .._keys import Role
from .._state import Service
from ._decisions import MAX_ID

__all__ = ["router"]

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)

ReviewerDecision = Literal["allow", "remove", "escalate", "skip"]
_MAX_NOTE = 2000
ItemId = Annotated[int, Path(ge=1, le=MAX_ID)]


class DecisionIn(BaseModel):
    decision: ReviewerDecision
    note: str | None = Field(None, max_length=_MAX_NOTE)


class BulkEntry(DecisionIn):
    item_id: int = Field(ge=1, le=MAX_ID)


class BulkIn(BaseModel):
    decisions: list[BulkEntry] = Field(min_length=1, max_length=MAX_BULK)


class UndoIn(BaseModel):
    decision_id: int = Field(ge=1, le=MAX_ID)


class AppealIn(BaseModel):
    sha256: str | None = Field(None, pattern="^[0-9a-f]{64}$")
    decision_id: int | None = Field(None, ge=1, le=MAX_ID)
    note: str | None = Field(None, max_length=_MAX_NOTE)

    @model_validator(mode="after")
    def one_target(self) -> AppealIn:
        if (self.sha256 is None) == (self.decision_id is None):
            raise ValueError("give either sha256 or decision_id")
        return self


def _item_dict(item: Any) -> dict[str, Any]:
    return {**item.to_dict(), "image_url": f"/v1/review/items/{item.id}/image"}


@router.get("/review/next")
async def review_next(
    service: Service,
    caller: ReviewerCaller,
    limit: Annotated[int, Query(ge=1, le=MAX_CLAIM)] = 1,
    queue: Literal["pending", "escalated"] = "pending",
) -> dict[str, Any]:
    """Claim up to ``limit`` items under a lease; the escalation queue is for admins."""
    if queue == "escalated" and not caller.can(Role.admin):
        raise ServiceError(403, "forbidden", "only admins see the escalation queue")
    items = await service.in_store(
        service.review.claim, caller.reviewer, limit=limit, queue=ItemState(queue)
    )
    stats = await service.in_store(service.review.stats)
    remaining = stats["escalated"] if queue == "escalated" else stats["depth"]
    return {
        "items": [_item_dict(item) for item in items],
        "remaining": remaining,
        "lease_s": service.review.lease_s,
    }


@router.get("/review/items/{item_id:int}/image")
async def review_image(item_id: ItemId, service: Service, caller: ReviewerCaller) -> Response:
    """The image of an item you hold (admins: any item whose image is kept)."""
    item, data = await service.in_store(service.review.image, item_id)
    if item.claimed_by != caller.reviewer and not caller.can(Role.admin):
        raise ServiceError(403, "forbidden", f"claim item {item_id} before viewing it")
    return Response(
        data,
        media_type=item.media_type,
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


def _overlay_png(classifier: Classifier, data: bytes) -> bytes | PixguardError:
    """The explanation overlay of ``data`` as PNG bytes, or why there is none."""
    explanation = classifier.explain([data])[0]
    if not explanation.ok:
        return (
            explanation.prediction.error
            or explanation.error
            or ExplanationError("the model gave no heatmap", source=classifier.name)
        )
    png = io.BytesIO()
    explanation.overlay().save(png, format="PNG")
    return png.getvalue()


@router.get("/review/items/{item_id:int}/explanation")
async def review_explanation(item_id: ItemId, service: Service, caller: ReviewerCaller) -> Response:
    """Why the model flagged an item you hold: its image with the NSFW heatmap drawn
    over it (PNG), the overlay ``classify --explain`` writes."""
    item, data = await service.in_store(service.review.image, item_id)
    if item.claimed_by != caller.reviewer and not caller.can(Role.admin):
        raise ServiceError(403, "forbidden", f"claim item {item_id} before viewing it")
    # Off the event loop, on the decode pool like ``/v1/classify?explain=true``; the
    # classifier's explain lock serialises the heatmaps themselves.
    png = await asyncio.get_running_loop().run_in_executor(
        service.decode_pool, _overlay_png, service.classifier, data
    )
    if isinstance(png, PixguardError):
        raise ServiceError(422, "explanation_failed", f"no explanation for item {item_id}: {png}")
    return Response(
        png,
        media_type="image/png",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


def _record(record: DecisionRecord) -> dict[str, Any]:
    return record.to_dict()


@router.post("/review/bulk")
async def review_bulk(body: BulkIn, service: Service, caller: ReviewerCaller) -> dict[str, Any]:
    """Decide up to 1,000 claimed items; each gets its own result or error."""
    results = await service.in_store(
        service.review.bulk_decide,
        caller.reviewer,
        [(entry.item_id, entry.decision, entry.note) for entry in body.decisions],
        admin=caller.can(Role.admin),
    )
    out = []
    for entry, result in zip(body.decisions, results, strict=True):
        if isinstance(result, DecisionRecord):
            out.append({"item_id": entry.item_id, "ok": True, "decision": _record(result)})
        else:
            out.append({"item_id": entry.item_id, "ok": False, "error": result.to_dict()})
    return {"results": out, "decided": sum(r["ok"] for r in out)}


@router.post("/review/undo")
async def review_undo(body: UndoIn, service: Service, caller: ReviewerCaller) -> dict[str, Any]:
    """Take back your latest decision on an item: an ``undo`` is appended and the item
    comes back to you."""
    record = await service.in_store(
        service.review.undo, body.decision_id, caller.reviewer, admin=caller.can(Role.admin)
    )
    return {"decision": _record(record), "item": _item_dict(service.review.item(record.item_id))}


@router.get("/review/stats")
async def review_stats(service: Service, caller: ReviewerCaller) -> dict[str, Any]:
    """Queue depth, decisions by kind, agreement with the model, the oldest item's age."""
    return await service.in_store(service.review.stats)


@router.post("/review/{item_id:int}")
async def review_decide(
    item_id: ItemId, body: DecisionIn, service: Service, caller: ReviewerCaller
) -> dict[str, Any]:
    """Record allow, remove, escalate or skip on an item you claimed."""
    record = await service.in_store(
        service.review.decide,
        item_id,
        caller.reviewer,
        body.decision,
        note=body.note,
        admin=caller.can(Role.admin),
    )
    return {"decision": _record(record)}


@router.post("/appeals", status_code=201)
async def appeal(body: AppealIn, service: Service, caller: Caller) -> dict[str, Any]:
    """Send a decided item (by sha256 or decision id) to the escalation queue again.
    Keys other than admins appeal only items they submitted."""
    record = await service.in_store(
        service.review.appeal,
        sha256=body.sha256,
        decision_id=body.decision_id,
        appellant=caller.reviewer,
        note=body.note,
        key_id=None if caller.can(Role.admin) else caller.key_id,
    )
    return {"decision": _record(record)}
