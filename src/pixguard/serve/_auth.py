"""Bearer-token authentication and the per-key rate limit, as a dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ._errors import ServiceError
from ._keys import ApiKey
from ._state import Service

__all__ = ["Caller", "authorize"]


async def authorize(request: Request, service: Service) -> ApiKey | None:
    """The caller's key. async on purpose: a plain function would cost a worker-thread
    hop per request, and a key lookup is one indexed SQLite read."""
    header = request.headers.get("authorization", "")
    if not header:
        if service.settings.auth_required:
            raise ServiceError(
                401, "unauthorized", "an API key is required (Authorization: Bearer <key>)"
            )
        return None
    scheme, _, token = header.partition(" ")
    key = service.keys.verify(token.strip()) if scheme.lower() == "bearer" else None
    if key is None:
        raise ServiceError(401, "unauthorized", "the API key is invalid or revoked")
    wait = service.limiter.acquire(key.id)
    if wait:
        raise ServiceError(
            429,
            "rate_limited",
            "too many requests for this key",
            {"Retry-After": str(max(1, round(wait)))},
        )
    return key


Caller = Annotated[ApiKey | None, Depends(authorize)]
