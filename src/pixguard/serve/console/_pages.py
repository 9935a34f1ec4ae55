"""The web console: server-rendered pages (Jinja2) with a little plain JavaScript,
sign-in with a session cookie and CSRF, and the API docs with local assets.

Pages call the same ``/v1`` routes as API clients; the session cookie authenticates
them and the ``X-CSRF-Token`` header (from the page's ``<meta name="csrf-token">``)
guards every write. Nothing is loaded from outside the server: the CSP is
``default-src 'self'``.
"""

from __future__ import annotations

import csv
import datetime as dt
import hmac
import io
import secrets
from pathlib import Path
from typing import Annotated, Any

import fastapi_offline
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from ..._version import __version__
from .._auth import LOCAL_OPERATOR, Principal, principal_for, visible_key
from .._errors import ServiceError
from .._keys import Role
from .._sessions import SESSION_COOKIE
from .._state import SECONDS_PER_DAY, Service, ServiceState
from ..routes._decisions import MAX_ID

__all__ = ["CONTENT_SECURITY_POLICY", "router"]

_HERE = Path(__file__).parent
_STATIC_ROOTS = {
    "console": _HERE / "static",
    # Swagger UI 5 (OpenAPI 3.1, which FastAPI writes), as shipped in fastapi-offline.
    "swagger": Path(fastapi_offline.__file__).parent / "static",
}
_LOGIN_CSRF_COOKIE = "pixguard_login_csrf"
_PAGE_SIZE = 50
_CSV_MAX_ROWS = 100_000
_CHART_DAYS = 14

#: Images may be blob: (files picked on the moderate page, shown before upload) and
#: data: (Swagger UI's icons); everything else comes from this server only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'; "
    "base-uri 'self'; form-action 'self'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(directory=str(_HERE / "templates"))
router = APIRouter(include_in_schema=False)


class _SignInNeededError(Exception):
    pass


def _viewer(request: Request, service: ServiceState) -> Principal:
    """The signed-in caller, or the local operator when auth is off."""
    try:
        principal = principal_for(request, service)
    except ServiceError:
        principal = None
    if principal is not None:
        return principal
    if service.settings.auth_required:
        raise _SignInNeededError
    return LOCAL_OPERATOR


def _render(
    request: Request,
    service: ServiceState,
    name: str,
    viewer: Principal | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    response = templates.TemplateResponse(
        request,
        name,
        {
            "viewer": viewer,
            "csrf": viewer.csrf if viewer is not None else None,
            "has_generate": service.jobs is not None,
            "has_index": service.index is not None,
            "has_policy": service.policy is not None,
            "auth_required": service.settings.auth_required,
            "version": __version__,
            "Role": Role,
            **context,
        },
        status_code=status_code,
    )
    response.headers.update(_SECURITY_HEADERS)
    return response


def _page(name: str, role: Role = Role.client, **fixed: Any) -> Any:
    """A GET page for callers with at least ``role``."""

    async def page(request: Request, service: Service) -> Response:
        try:
            viewer = _viewer(request, service)
        except _SignInNeededError:
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        if not viewer.can(role):
            return _render(
                request,
                service,
                "error.html",
                viewer,
                status_code=403,
                message=f"This page needs a {role.value} key; you are signed in as a "
                f"{viewer.role.value}.",
            )
        return _render(request, service, name, viewer, **fixed)

    return page


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/moderate", status_code=303)


router.add_api_route("/moderate", _page("moderate.html"), methods=["GET"])
router.add_api_route(
    "/review", _page("review.html", Role.reviewer, queue="pending"), methods=["GET"]
)
router.add_api_route(
    "/escalations", _page("review.html", Role.admin, queue="escalated"), methods=["GET"]
)


@router.get("/generate")
async def generate_page(request: Request, service: Service) -> Response:
    if service.jobs is None:
        viewer = _viewer_or_none(request, service)
        return _render(
            request,
            service,
            "error.html",
            viewer,
            status_code=404,
            message="Generation is not configured on this server (--generate-variant).",
        )
    return await _page("generate.html")(request, service)


def _viewer_or_none(request: Request, service: ServiceState) -> Principal | None:
    try:
        return _viewer(request, service)
    except _SignInNeededError:
        return None


# --- sign in and out -----------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    # Only local paths: never an open redirect to another site.
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return "/moderate"


def _login_form(
    request: Request,
    service: ServiceState,
    *,
    error: str | None = None,
    status_code: int = 200,
    next_path: str = "/moderate",
) -> HTMLResponse:
    token = request.cookies.get(_LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = _render(
        request,
        service,
        "login.html",
        None,
        status_code=status_code,
        login_csrf=token,
        error=error,
        next_path=next_path,
    )
    response.set_cookie(
        _LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/login",
    )
    return response


@router.get("/login")
async def login_page(
    request: Request, service: Service, next: Annotated[str | None, Query()] = None
) -> Response:
    return _login_form(request, service, next_path=_safe_next(next))


@router.post("/login")
async def login(
    request: Request,
    service: Service,
    key: Annotated[str, Form(max_length=200)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=500)] = "/moderate",
) -> Response:
    expected = request.cookies.get(_LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, csrf):
        return _login_form(
            request,
            service,
            error="The form expired or did not come from this page. Please try again.",
            status_code=403,
        )
    api_key = service.keys.verify(key.strip())
    if api_key is None:
        return _login_form(
            request,
            service,
            error="That API key is not valid (wrong, or revoked).",
            status_code=401,
            next_path=_safe_next(next),
        )
    session = service.sessions.create(api_key)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session.token,
        max_age=int(service.sessions.ttl_s),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    response.delete_cookie(_LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(
    request: Request, service: Service, csrf: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    session = service.sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is not None:
        if not session.csrf_matches(csrf):
            raise ServiceError(403, "csrf_failed", "missing or wrong CSRF token")
        service.sessions.delete(session.token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- decisions and stats (server-rendered) -------------------------------------------


def _timestamp(day: str | None, *, end: bool = False) -> float | None:
    if not day:
        return None
    try:
        date = dt.date.fromisoformat(day)
    except ValueError:
        raise ServiceError(422, "invalid_date", f"{day!r} is not a date (YYYY-MM-DD)") from None
    start = dt.datetime.combine(date, dt.time(), tzinfo=dt.UTC).timestamp()
    return start + SECONDS_PER_DAY if end else start


def _audit_rows(
    service: ServiceState, viewer: Principal, filters: dict[str, Any], *, limit: int, after_id: int
) -> list[dict[str, Any]]:
    return service.audit.query(
        label=filters["label"],
        action=filters["action"],
        key_id=visible_key(viewer, filters["key_id"]),
        since=_timestamp(filters["since"]),
        until=_timestamp(filters["until"], end=True),
        limit=limit,
        after_id=after_id,
    )


def _filters(
    label: str | None, action: str | None, key_id: str | None, since: str | None, until: str | None
) -> dict[str, Any]:
    # A form's empty fields arrive as "": they mean "any".
    # isascii first: "²".isdigit() is true, but int("²") raises.
    if key_id and (not (key_id.isascii() and key_id.isdigit()) or int(key_id) > MAX_ID):
        raise ServiceError(422, "invalid_key_id", f"{key_id[:40]!r} is not a key id")
    return {
        "label": label or None,
        "action": action or None,
        "key_id": int(key_id) if key_id else None,
        "since": since or None,
        "until": until or None,
    }


@router.get("/decisions")
async def decisions_page(
    request: Request,
    service: Service,
    label: str | None = None,
    action: str | None = None,
    key_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
    after_id: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> Response:
    try:
        viewer = _viewer(request, service)
    except _SignInNeededError:
        return RedirectResponse("/login?next=/decisions", status_code=303)
    try:
        filters = _filters(label, action, key_id, since, until)
        rows = await service.in_store(
            _audit_rows, service, viewer, filters, limit=_PAGE_SIZE + 1, after_id=after_id
        )
    except ServiceError as exc:
        return _render(
            request, service, "error.html", viewer, status_code=exc.status, message=exc.message
        )
    more = len(rows) > _PAGE_SIZE
    rows = rows[:_PAGE_SIZE]
    query = {k: v for k, v in filters.items() if v not in (None, "")}
    return _render(
        request,
        service,
        "decisions.html",
        viewer,
        rows=[{**row, "when": _format_time(row["time"])} for row in rows],
        filters=filters,
        query=query,
        next_after_id=rows[-1]["id"] if more else None,
        after_id=after_id,
    )


@router.get("/decisions.csv")
async def decisions_csv(
    request: Request,
    service: Service,
    label: str | None = None,
    action: str | None = None,
    key_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Response:
    try:
        viewer = _viewer(request, service)
    except _SignInNeededError:
        return JSONResponse({"code": "unauthorized", "message": "sign in first"}, 401)
    filters = _filters(label, action, key_id, since, until)
    rows = await service.in_store(
        _audit_rows, service, viewer, filters, limit=_CSV_MAX_ROWS, after_id=0
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
            **_SECURITY_HEADERS,
        },
    )


def _format_time(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


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
        viewer = _viewer(request, service)
    except _SignInNeededError:
        return RedirectResponse("/login?next=/stats", status_code=303)
    own = visible_key(viewer, None)
    audit = await service.in_store(service.audit.timeline, bucket_s=SECONDS_PER_DAY, key_id=own)
    review = (
        await service.in_store(service.review.stats, bucket_s=SECONDS_PER_DAY)
        if viewer.can(Role.reviewer)
        else None
    )
    return _render(
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


# --- API docs with local assets, and static files -----------------------------------


@router.get("/openapi.json")
async def openapi(request: Request, service: Service) -> Response:
    _require_any(request, service)
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def docs(request: Request, service: Service) -> Response:
    try:
        viewer = _viewer(request, service)
    except _SignInNeededError:
        # A person in a browser is sent to sign in; an API client gets the usual 401.
        if "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/login?next=/docs", status_code=303)
        if "authorization" in request.headers:
            raise ServiceError(401, "unauthorized", "the API key is invalid or revoked") from None
        raise ServiceError(
            401, "unauthorized", "an API key is required (sign in at /login)"
        ) from None
    return _render(request, service, "docs.html", viewer)


def _require_any(request: Request, service: ServiceState) -> Principal:
    try:
        return _viewer(request, service)
    except _SignInNeededError:
        raise ServiceError(
            401, "unauthorized", "an API key is required (Authorization: Bearer <key>)"
        ) from None


@router.get("/static/{area}/{path:path}")
async def static(area: str, path: str) -> Response:
    root = _STATIC_ROOTS.get(area)
    if root is None:
        raise ServiceError(404, "not_found", "no such file")
    target = (root / path).resolve()
    if not target.is_relative_to(root.resolve()) or not target.is_file():
        raise ServiceError(404, "not_found", "no such file")
    return FileResponse(target, headers={"Cache-Control": "public, max-age=3600"})
