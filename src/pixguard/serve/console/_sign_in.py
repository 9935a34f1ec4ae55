"""Signing in with an API key (a session cookie, and a CSRF token for the sign-in
form itself) and signing out."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from .._errors import ServiceError
from .._sessions import SESSION_COOKIE
from .._state import Service, ServiceState
from ._render import render

__all__ = ["router"]

_LOGIN_CSRF_COOKIE = "pixguard_login_csrf"

router = APIRouter()


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
    response = render(
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
