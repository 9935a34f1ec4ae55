"""uvicorn's h11 protocol with the bounds uvicorn lacks: a deadline for a request's
headers, and a cap on connections per client address.

uvicorn bounds idle keep-alive connections (``timeout_keep_alive``), header size
(``h11_max_incomplete_event_size``) and the total connections (``limit_concurrency``),
but a client that sends its headers one byte a second, or opens thousands of silent
connections from one address, is held forever. The request body has its own
deadline in the app (``body_timeout_s``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["BoundedH11Protocol", "bounded_protocol"]

_TOO_MANY = (
    b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


class BoundedH11Protocol(H11Protocol):
    header_timeout_s: float = 10.0
    max_connections_per_client: int = 64
    # One process, one event loop: a plain counter, touched only on that loop.
    _per_client: ClassVar[Counter[str]] = Counter()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._counted: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else None
        if host is not None:
            self._per_client[host] += 1
            self._counted = host
            if self._per_client[host] > self.max_connections_per_client:
                body = (
                    b'{"code": "too_many_connections", "message": "at most %d connections '
                    b'per client", "request_id": null}' % self.max_connections_per_client
                )
                transport.write(_TOO_MANY % (len(body), body))
                transport.close()
                return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        if self._counted is not None:
            self._per_client[self._counted] -= 1
            if self._per_client[self._counted] <= 0:
                del self._per_client[self._counted]
            self._counted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # the first bytes of the next request
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_timer()  # the headers are in

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def bounded_protocol(
    *, header_timeout_s: float, max_connections_per_client: int
) -> type[BoundedH11Protocol]:
    """A protocol class for ``uvicorn.run(http=...)`` with these bounds."""
    return type(
        "BoundedH11Protocol",
        (BoundedH11Protocol,),
        {
            "header_timeout_s": header_timeout_s,
            "max_connections_per_client": max_connections_per_client,
            "_per_client": Counter(),
        },
    )
