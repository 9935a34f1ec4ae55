"""What every console page shares: who is looking, the security headers, and
rendering a template with the context every page needs.

Pages call the same ``/v1`` routes as API clients; the session cookie authenticates
them and the ``X-CSRF-Token`` header (from the page's ``<meta name="csrf-token">``)
guards every write. Nothing is loaded from outside the server: the CSP is
``default-src 'self'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from ..._version import __version__
from .._auth import LOCAL_OPERATOR, Principal, principal_for
from .._errors import ServiceError
from .._keys import Role
from .._state import ServiceState

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "SECURITY_HEADERS",
    "SignInNeededError",
    "render",
    "to_sign_in",
    "viewer_of",
    "viewer_or_none",
]

#: Images may be blob: (files picked on the moderate page, shown before upload) and
#: data: (Swagger UI's icons); everything else comes from this server only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'; "
    "base-uri 'self'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


class SignInNeededError(Exception):
    pass


def viewer_of(request: Request, service: ServiceState) -> Principal:
    """The signed-in caller, or the local operator when auth is off."""
    try:
        principal = principal_for(request, service)
    except ServiceError:
        principal = None
    if principal is not None:
        return principal
    if service.settings.auth_required:
        raise SignInNeededError
    return LOCAL_OPERATOR


def viewer_or_none(request: Request, service: ServiceState) -> Principal | None:
    try:
        return viewer_of(request, service)
    except SignInNeededError:
        return None


def to_sign_in(request: Request) -> RedirectResponse:
    """To the sign-in page, which comes back to this page afterwards."""
    return RedirectResponse(f"/login?next={request.url.path}", status_code=303)


def render(
    request: Request,
    service: ServiceState,
    name: str,
    viewer: Principal | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    response = _templates.TemplateResponse(
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
    response.headers.update(SECURITY_HEADERS)
    return response
