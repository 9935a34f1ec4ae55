"""Per-request context: a request id, the JSON access log line and request metrics."""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import Response

from ._errors import error_response

__all__ = ["request_context"]

logger = logging.getLogger("pixguard.serve")

#: A client's X-Request-ID is kept only when it is short and plain (it goes into
#: logs, the audit log and headers); anything else is replaced by a fresh id.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    return given if _CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


async def request_context(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    request_id = _request_id(request)
    request.state.request_id = request_id
    started = time.perf_counter()
    try:
        response = await call_next(request)
    except Exception as exc:
        logger.error(
            json.dumps(
                {
                    "event": "unhandled_error",
                    "request_id": request_id,
                    "path": request.url.path,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                }
            )
        )
        response = error_response(request, 500, "internal_error", "internal error")
    response.headers["X-Request-ID"] = request_id
    route = request.scope.get("route")
    path = getattr(route, "path", "unmatched")
    service = getattr(request.app.state, "service", None)
    if service is not None:
        service.metrics.requests.labels(path, str(response.status_code)).inc()
        service.metrics.latency.labels(path).observe(time.perf_counter() - started)
    logger.info(
        json.dumps(
            {
                "request_id": request_id,
                "method": request.method,
                "path": path,
                "status": response.status_code,
                "ms": round(1000 * (time.perf_counter() - started), 1),
            }
        )
    )
    return response
