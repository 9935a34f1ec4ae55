"""uvicorn's HTTP/1.1 protocols with the bounds uvicorn lacks: a deadline for a
request's headers, a cap on connections per client address, and (for httptools)
a cap on the size of a request's headers.

uvicorn bounds idle keep-alive connections (``timeout_keep_alive``) and the total
connections (``limit_concurrency``), and with h11 the header size
(``h11_max_incomplete_event_size``), but a client that sends its headers one byte a
second, or opens thousands of silent connections from one address, is held
forever. The request body has its own deadline in the app (``body_timeout_s``).

Two parsers, the same bounds: httptools (llhttp, in C; the default: it parses a
request for a fraction of h11's CPU) and h11 (pure Python). Both keep the
per-connection bounds in one :class:`_ConnectionBounds`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, TypeGuard

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ._settings import ServeSettings

__all__ = ["bounded_protocol"]

_TOO_MANY = (
    b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)
# What uvicorn itself answers to a request h11 refuses (headers over the limit
# included), so both parsers answer alike.
_HEADERS_TOO_LARGE = "Invalid HTTP request received."
# What a stream transport must offer: asyncio's and uvloop's both do, but uvloop's
# is not an asyncio.Transport subclass, so this is checked by behaviour.
_STREAM_METHODS = ("write", "close", "is_closing", "get_extra_info", "pause_reading")


def _is_stream(transport: asyncio.BaseTransport) -> TypeGuard[asyncio.Transport]:
    return all(callable(getattr(transport, name, None)) for name in _STREAM_METHODS)


def _stream(transport: asyncio.BaseTransport) -> asyncio.Transport:
    if not _is_stream(transport):
        raise TypeError(f"an HTTP connection needs a stream transport, not {type(transport)!r}")
    return transport


@dataclass(frozen=True)
class _Limits:
    header_timeout_s: float
    max_connections_per_client: int
    max_header_bytes: int


class _ConnectionBounds:
    """One connection's share of the bounds: its count against its client's cap, and
    the deadline for the headers of the request it is reading."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, limits: _Limits, per_client: Counter[str]
    ) -> None:
        self._loop = loop
        self._limits = limits
        self._per_client = per_client
        self._timer: asyncio.TimerHandle | None = None
        self._counted: str | None = None
        self._transport: asyncio.Transport | None = None

    def open(self, transport: asyncio.Transport, client: tuple[str, int] | None) -> bool:
        """Count the connection; over its client's cap, answer 429, close it and
        return False. Otherwise start the deadline for the first request's headers."""
        self._transport = transport
        if client is not None:
            host = client[0]
            self._per_client[host] += 1
            self._counted = host
            if self._per_client[host] > self._limits.max_connections_per_client:
                body = (
                    b'{"code": "too_many_connections", "message": "at most %d connections '
                    b'per client", "request_id": null}' % self._limits.max_connections_per_client
                )
                transport.write(_TOO_MANY % (len(body), body))
                transport.close()
                return False
        self.headers_started()
        return True

    def closed(self) -> None:
        self.headers_done()
        if self._counted is not None:
            self._per_client[self._counted] -= 1
            if self._per_client[self._counted] <= 0:
                del self._per_client[self._counted]
            self._counted = None

    def headers_started(self) -> None:
        """The deadline runs from the first byte of a request (or from the connection)."""
        if self._timer is None:
            self._timer = self._loop.call_later(self._limits.header_timeout_s, self._too_slow)

    def headers_done(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


class _BoundedConnection(asyncio.Protocol):
    """What both parsers' protocols add to uvicorn's: a :class:`_ConnectionBounds`
    opened with the connection and closed with it. Listed before the uvicorn
    protocol among the bases, so its calls to ``super()`` reach that protocol."""

    limits: ClassVar[_Limits]
    # One process, one event loop: a plain counter, touched only on that loop.
    per_client: ClassVar[Counter[str]]
    loop: asyncio.AbstractEventLoop
    client: tuple[str, int] | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bounds = _ConnectionBounds(self.loop, self.limits, self.per_client)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = _stream(transport)
        super().connection_made(stream)
        self._bounds.open(stream, self.client)

    def connection_lost(self, exc: Exception | None) -> None:
        self._bounds.closed()
        super().connection_lost(exc)


class _BoundedH11Protocol(_BoundedConnection, H11Protocol):
    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._bounds.headers_started()  # the first bytes of the next request
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._bounds.headers_done()


class _BoundedHttpToolsProtocol(_BoundedConnection, HttpToolsProtocol):
    """llhttp has no limit on header size: the bytes received while a request's
    headers are incomplete are counted here, and past ``max_header_bytes`` the
    request gets 400 (as h11 does with ``h11_max_incomplete_event_size``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_headers = True
        self._headers_completed = 0
        self._header_bytes = 0

    def data_received(self, data: bytes) -> None:
        reading_headers = self._reading_headers
        completed_before = self._headers_completed
        if reading_headers:
            self._bounds.headers_started()
        super().data_received(data)
        # Counted only while the headers this chunk began in are still incomplete.
        if (
            reading_headers
            and self._headers_completed == completed_before
            and not self.transport.is_closing()
        ):
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes:
                self.send_400_response(_HEADERS_TOO_LARGE)

    def on_headers_complete(self) -> None:
        # Here, not after the chunk: the same chunk may also end the request, and
        # the deadline must not outlive its headers into the request's processing.
        self._bounds.headers_done()
        self._reading_headers = False
        self._headers_completed += 1
        self._header_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_headers = True  # what comes next is the next request


def bounded_protocol(settings: ServeSettings) -> type[asyncio.Protocol]:
    """A protocol class for ``uvicorn.run(http=...)``: ``settings.http_parser`` with
    the service's bounds (and a per-client count of its own)."""
    limits = _Limits(
        header_timeout_s=settings.header_timeout_s,
        max_connections_per_client=settings.max_connections_per_client,
        max_header_bytes=settings.max_header_bytes,
    )
    base: type[_BoundedH11Protocol | _BoundedHttpToolsProtocol] = (
        _BoundedHttpToolsProtocol if settings.http_parser == "httptools" else _BoundedH11Protocol
    )
    return type(base.__name__.lstrip("_"), (base,), {"limits": limits, "per_client": Counter()})
