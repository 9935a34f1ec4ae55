"""A real uvicorn server in a thread, on loopback, with the protocol and settings
``pixguard serve`` uses: for tests that need sockets but not a subprocess."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn

from pixguard import Classifier
from pixguard.serve import ServeSettings, create_app
from pixguard.serve._protocol import bounded_protocol


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def live_server(
    settings: ServeSettings, classifier_factory: Callable[[ServeSettings], Classifier]
) -> Iterator[str]:
    """Serve the app until the block ends; yields its base URL."""
    app = create_app(settings, classifier_factory=classifier_factory)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=settings.port,
        log_config=None,
        access_log=False,
        http=bounded_protocol(settings),
        timeout_keep_alive=settings.keep_alive_s,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        limit_concurrency=settings.max_connections,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
