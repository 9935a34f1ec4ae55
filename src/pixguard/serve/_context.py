"""Per-request context: a request id, the JSON access log line and request metrics.

A plain ASGI middleware (not ``BaseHTTPMiddleware``, whose extra task and streams
per request cost measurable CPU under load)."""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestContext"]

logger = logging.getLogger("pixguard.serve")

#: A client's X-Request-ID is kept only when it is short and plain (it goes into
#: logs, the audit log and headers); anything else is replaced by a fresh id.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            given = value.decode("latin-1")
            return given if _CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    return uuid.uuid4().hex


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False
        service = _service_of(scope)
        if service is not None:
            service.metrics.in_flight.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            logger.error(
                json.dumps(
                    {
                        "event": "unhandled_error",
                        "request_id": request_id,
                        "path": scope.get("path"),
                        "error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(),
                    }
                )
            )
            if response_started:
                raise
            await _internal_error(request_id, send_with_id)
        finally:
            if service is not None:
                service.metrics.in_flight.dec()
            self._record(scope, request_id, status, time.perf_counter() - started)

    @staticmethod
    def _record(scope: Scope, request_id: str, status: int, seconds: float) -> None:
        path = getattr(scope.get("route"), "path", "unmatched")
        service = _service_of(scope)
        if service is not None:
            service.metrics.requests.labels(path, str(status)).inc()
            service.metrics.latency.labels(path).observe(seconds)
        logger.info(
            json.dumps(
                {
                    "request_id": request_id,
                    "method": scope.get("method"),
                    "path": path,
                    "status": status,
                    "ms": round(1000 * seconds, 1),
                }
            )
        )


def _service_of(scope: Scope) -> Any:
    """The app's ServiceState, or None before the lifespan has set it up."""
    app: Any = scope.get("app")
    return getattr(getattr(app, "state", None), "service", None)


async def _internal_error(request_id: str, send: Send) -> None:
    body = json.dumps(
        {"code": "internal_error", "message": "internal error", "request_id": request_id}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
