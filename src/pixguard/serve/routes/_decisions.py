"""The audit log, queried."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from .._auth import Caller, visible_key
from .._errors import ERROR_RESPONSES
from .._state import Service

__all__ = ["router"]

#: Ids are SQLite integers: larger values are refused with 422, never sent to SQLite.
MAX_ID = 2**63 - 1

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)


@router.get("/decisions")
async def decisions(
    service: Service,
    caller: Caller,
    label: str | None = None,
    action: str | None = None,
    key_id: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    sha256: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after_id: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> dict[str, Any]:
    """The audit log, oldest first; pass the last ``id`` as ``after_id`` for the next page.

    Admins see every key's rows; any other key sees only its own."""
    key_id = visible_key(caller, key_id)
    rows = await service.in_store(
        service.audit.query,
        label=label,
        action=action,
        key_id=key_id,
        sha256=sha256,
        since=since,
        until=until,
        limit=limit,
        after_id=after_id,
    )
    return {"decisions": rows, "next_after_id": rows[-1]["id"] if len(rows) == limit else None}
