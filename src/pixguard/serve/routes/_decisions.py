"""The audit log, queried."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query

from .._auth import Caller, visible_key
from .._state import Service

__all__ = ["router"]

router = APIRouter(prefix="/v1")


@router.get("/decisions")
async def decisions(
    service: Service,
    caller: Caller,
    label: str | None = None,
    action: str | None = None,
    key_id: int | None = None,
    sha256: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after_id: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """The audit log, oldest first; pass the last ``id`` as ``after_id`` for the next page.

    Admins see every key's rows; any other key sees only its own."""
    key_id = visible_key(caller, key_id)
    rows = await asyncio.get_running_loop().run_in_executor(
        None,
        lambda: service.audit.query(
            label=label,
            action=action,
            key_id=key_id,
            sha256=sha256,
            since=since,
            until=until,
            limit=limit,
            after_id=after_id,
        ),
    )
    return {"decisions": rows, "next_after_id": rows[-1]["id"] if len(rows) == limit else None}
