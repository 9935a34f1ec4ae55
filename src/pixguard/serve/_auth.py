"""Who is calling, and may they: Bearer tokens or a console session, roles, the
per-key rate limit, and CSRF for cookie-authenticated writes.

Every route takes one of :data:`Caller` (any key), :data:`ReviewerCaller` or
:data:`AdminCaller`. With auth off (loopback only, by default) a request without a
key acts as the local operator, an admin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ._errors import ServiceError
from ._keys import ApiKey, Role
from ._sessions import SESSION_COOKIE
from ._state import Service, ServiceState

__all__ = [
    "CSRF_HEADER",
    "AdminCaller",
    "Caller",
    "Principal",
    "ReviewerCaller",
    "authorize",
    "principal_for",
    "visible_key",
]

CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    """The caller: a key (by id, name and role), or the local operator when auth is off."""

    key_id: int | None
    name: str
    role: Role
    csrf: str | None = None  # the session's CSRF token, for console pages

    @property
    def reviewer(self) -> str:
        """How the review queue names this caller in claims and decisions."""
        return self.name if self.key_id is None else f"{self.name}#{self.key_id}"

    def can(self, role: Role) -> bool:
        return self.role.includes(role)

    def owns(self, key_id: int | None) -> bool:
        """Whether rows written under ``key_id`` are this caller's to see."""
        return self.role is Role.admin or (self.key_id is not None and self.key_id == key_id)


LOCAL_OPERATOR = Principal(key_id=None, name="local", role=Role.admin)


def _from_key(key: ApiKey, csrf: str | None = None) -> Principal:
    return Principal(key_id=key.id, name=key.name, role=key.role, csrf=csrf)


def principal_for(request: Request, service: ServiceState) -> Principal | None:
    """The caller by Bearer token or session cookie, or None when neither is given.

    Raises 401 for a wrong token, and 403 for a cookie-authenticated write without
    the session's CSRF token.
    """
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        key = service.keys.verify(token.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            raise ServiceError(401, "unauthorized", "the API key is invalid or revoked")
        return _from_key(key)
    session = service.sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return None
    # The key may have been revoked since sign-in.
    if service.keys.get(session.key.id) is None:
        service.sessions.delete(session.token)
        return None
    if request.method not in _SAFE_METHODS and not session.csrf_matches(
        request.headers.get(CSRF_HEADER)
    ):
        raise ServiceError(403, "csrf_failed", "missing or wrong CSRF token")
    return _from_key(session.key, session.csrf)


async def authorize(request: Request, service: Service) -> Principal:
    """The caller. async on purpose: a plain dependency would cost a worker-thread
    hop per request, and a key lookup is one indexed SQLite read."""
    principal = principal_for(request, service)
    if principal is None:
        if service.settings.auth_required:
            raise ServiceError(
                401, "unauthorized", "an API key is required (Authorization: Bearer <key>)"
            )
        return LOCAL_OPERATOR
    if principal.key_id is not None:
        wait = service.limiter.acquire(principal.key_id)
        if wait:
            raise ServiceError(
                429,
                "rate_limited",
                "too many requests for this key",
                {"Retry-After": str(max(1, round(wait)))},
            )
    return principal


def visible_key(caller: Principal, key_id: int | None) -> int | None:
    """The ``key_id`` filter a caller's audit query runs with: admins may name any
    key (or none, for all); everyone else is held to their own."""
    if caller.can(Role.admin):
        return key_id
    if key_id is not None and key_id != caller.key_id:
        raise ServiceError(403, "forbidden", "a key sees only its own decisions")
    return caller.key_id


Caller = Annotated[Principal, Depends(authorize)]


def _requires(role: Role):
    async def check(principal: Caller) -> Principal:
        if not principal.can(role):
            raise ServiceError(
                403, "forbidden", f"this needs a {role.value} key; yours is {principal.role.value}"
            )
        return principal

    return check


ReviewerCaller = Annotated[Principal, Depends(_requires(Role.reviewer))]
AdminCaller = Annotated[Principal, Depends(_requires(Role.admin))]
