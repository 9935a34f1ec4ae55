"""The stats page: actions per day, and the review queue's numbers for reviewers,
as inline SVG bar charts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .._auth import visible_key
from .._keys import Role
from .._state import SECONDS_PER_DAY, Service
from ._render import SignInNeededError, render, to_sign_in, viewer_of

__all__ = ["router"]

_CHART_DAYS = 14

router = APIRouter()


def _bars(timeline: list[dict[str, Any]], key: str, kinds: list[str]) -> dict[str, Any]:
    """Day-by-day stacked bars for an inline SVG chart over the last days."""
    today = int(dt.datetime.now(dt.UTC).timestamp() // SECONDS_PER_DAY) * SECONDS_PER_DAY
    days = [today - SECONDS_PER_DAY * i for i in range(_CHART_DAYS - 1, -1, -1)]
    by_day = {int(entry["start"]): entry[key] for entry in timeline}
    columns = []
    for day in days:
        counts = by_day.get(day, {})
        columns.append(
            {
                "label": dt.datetime.fromtimestamp(day, dt.UTC).strftime("%m-%d"),
                "counts": [(kind, counts.get(kind, 0)) for kind in kinds],
                "total": sum(counts.get(kind, 0) for kind in kinds),
            }
        )
    peak = max([c["total"] for c in columns] + [1])
    return {"columns": columns, "peak": peak, "kinds": kinds}


@router.get("/stats")
async def stats_page(request: Request, service: Service) -> Response:
    try:
        viewer = viewer_of(request, service)
    except SignInNeededError:
        return to_sign_in(request)
    own = visible_key(viewer, None)
    audit = await service.in_store(service.audit.timeline, bucket_s=SECONDS_PER_DAY, key_id=own)
    review = (
        await service.in_store(service.review.stats, bucket_s=SECONDS_PER_DAY)
        if viewer.can(Role.reviewer)
        else None
    )
    return render(
        request,
        service,
        "stats.html",
        viewer,
        actions=_bars(audit, "counts", ["allow", "review", "block", "sfw", "nsfw", "error"]),
        review=review,
        review_bars=None
        if review is None
        else _bars(review["timeline"], "decisions", ["allow", "remove", "escalate", "skip"]),
    )
