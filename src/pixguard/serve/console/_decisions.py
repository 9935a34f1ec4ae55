"""The audit log for people: the decisions page (filtered, paged) and its CSV export."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from .._auth import Principal, visible_key
from .._errors import ServiceError
from .._state import SECONDS_PER_DAY, Service
from ..routes._decisions import MAX_ID
from ._render import SECURITY_HEADERS, SignInNeededError, render, to_sign_in, viewer_of

__all__ = ["router"]

_PAGE_SIZE = 50
_CSV_MAX_ROWS = 100_000

router = APIRouter()


@dataclass(frozen=True)
class DecisionFilters:
    """The filter form's fields, as the page and the CSV link send them (a form's
    empty fields arrive as "": they mean "any").

    FastAPI reads them as plain strings; :meth:`audit_query` checks them. A bad
    value is therefore the route's to report: the page shows it in its own error
    view, the CSV download as the API's JSON error.
    """

    label: str | None = None
    action: str | None = None
    key_id: str | None = None
    since: str | None = None
    until: str | None = None

    def audit_query(self, viewer: Principal) -> dict[str, Any]:
        """The filters of the audit log query ``viewer`` may run (``ServiceError``:
        422 for a key id or date that is not one, 403 for another key's rows)."""
        key_id = self.key_id
        # isascii first: "²".isdigit() is true, but int("²") raises.
        if key_id and (not (key_id.isascii() and key_id.isdigit()) or int(key_id) > MAX_ID):
            raise ServiceError(422, "invalid_key_id", f"{key_id[:40]!r} is not a key id")
        return {
            "label": self.label or None,
            "action": self.action or None,
            "key_id": visible_key(viewer, int(key_id) if key_id else None),
            "since": _timestamp(self.since),
            "until": _timestamp(self.until, end=True),
        }

    @property
    def query(self) -> dict[str, str]:
        """The filters that are set, for links that keep them."""
        return {name: value for name, value in asdict(self).items() if value}


_Filters = Annotated[DecisionFilters, Depends()]


def _timestamp(day: str | None, *, end: bool = False) -> float | None:
    if not day:
        return None
    try:
        date = dt.date.fromisoformat(day)
    except ValueError:
        raise ServiceError(422, "invalid_date", f"{day!r} is not a date (YYYY-MM-DD)") from None
    start = dt.datetime.combine(date, dt.time(), tzinfo=dt.UTC).timestamp()
    return start + SECONDS_PER_DAY if end else start


def _format_time(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@router.get("/decisions")
async def decisions_page(
    request: Request,
    service: Service,
    filters: _Filters,
    after_id: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> Response:
    try:
        viewer = viewer_of(request, service)
    except SignInNeededError:
        return to_sign_in(request)
    try:
        rows = await service.in_store(
            service.audit.query,
            **filters.audit_query(viewer),
            limit=_PAGE_SIZE + 1,
            after_id=after_id,
        )
    except ServiceError as exc:
        return render(
            request, service, "error.html", viewer, status_code=exc.status, message=exc.message
        )
    more = len(rows) > _PAGE_SIZE
    rows = rows[:_PAGE_SIZE]
    return render(
        request,
        service,
        "decisions.html",
        viewer,
        rows=[{**row, "when": _format_time(row["time"])} for row in rows],
        filters=filters,
        query=filters.query,
        next_after_id=rows[-1]["id"] if more else None,
        after_id=after_id,
    )


@router.get("/decisions.csv")
async def decisions_csv(request: Request, service: Service, filters: _Filters) -> Response:
    try:
        viewer = viewer_of(request, service)
    except SignInNeededError:
        return JSONResponse({"code": "unauthorized", "message": "sign in first"}, 401)
    rows = await service.in_store(
        service.audit.query, **filters.audit_query(viewer), limit=_CSV_MAX_ROWS, after_id=0
    )
    columns = ["id", "time", "request_id", "key_id", "sha256", "label", "nsfw_score"]
    columns += ["model", "threshold", "action", "policy_version", "error"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return Response(
        buffer.getvalue(),
        media_type="text/csv",
        headers={
            "Content-Disposition": 'attachment; filename="pixguard-decisions.csv"',
            **SECURITY_HEADERS,
        },
    )
