"""Slow and greedy clients against a real uvicorn server (in a thread, on loopback),
with the protocol and settings ``pixguard serve`` uses: every bound, with each of
the two HTTP parsers."""

from __future__ import annotations

import io
import socket
import threading
import time

import httpx
import pytest
from PIL import Image

from pixguard import Classifier
from pixguard.serve import ServeSettings
from pixguard.serve._predict import HEAVY_PIXELS, declared_pixels
from tests.serve_live import free_port, live_server

MAX_HEADER_BYTES = 4096


@pytest.fixture(scope="module", params=["httptools", "h11"])
def live(request, tmp_path_factory, tiny_vit_folder):
    settings = ServeSettings(
        data_dir=tmp_path_factory.mktemp("live"),
        port=free_port(),
        header_timeout_s=1.0,
        body_timeout_s=1.0,
        max_connections_per_client=4,
        max_header_bytes=MAX_HEADER_BYTES,
        http_parser=request.param,
    )
    with live_server(settings, lambda s: Classifier.load(tiny_vit_folder, runtime="torch")):
        yield settings.port


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_slow_headers_are_cut_off(live):
    with _connect(live) as sock:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        started = time.monotonic()
        assert _read_all(sock) == b""  # closed by the server
        assert time.monotonic() - started < 5


def test_headers_trickled_in_one_byte_at_a_time_are_cut_off(live):
    with _connect(live) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 5:
            try:
                sock.sendall(b"a")  # the deadline runs from the first byte, not the last
            except OSError:
                closed = True
                break
            sock.settimeout(0.2)
            try:
                if sock.recv(4096) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed


def test_oversized_headers_get_400(live):
    with _connect(live) as sock:
        filler = b"X-Filler: " + b"f" * (2 * MAX_HEADER_BYTES) + b"\r\n"
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + filler)  # no end of headers
        response = _read_all(sock)
    assert response.startswith(b"HTTP/1.1 400"), response[:200]


def test_headers_just_under_the_limit_are_served(live):
    with _connect(live) as sock:
        filler = b"X-Filler: " + b"f" * (MAX_HEADER_BYTES - 200) + b"\r\n"
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + filler)
        time.sleep(0.05)  # the end of the headers in a second packet
        sock.sendall(b"Connection: close\r\n\r\n")
        assert _read_all(sock).startswith(b"HTTP/1.1 200")


def _png() -> bytes:
    from tests.helpers import encode, gradient_image

    return encode(gradient_image(48, 48), "PNG")


def test_a_body_larger_than_the_header_limit_in_one_packet_is_served(live):
    from tests.helpers import encode

    noise = Image.effect_noise((96, 96), 64).convert("RGB")
    body = encode(noise, "PNG")
    assert len(body) > 2 * MAX_HEADER_BYTES
    request = (
        b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with _connect(live) as sock:
        sock.sendall(request + request.replace(b"Host: x", b"Host: x\r\nConnection: close"))
        responses = _read_all(sock)  # two pipelined requests, both answered
    assert responses.startswith(b"HTTP/1.1 200"), responses[:200]
    assert responses.count(b"HTTP/1.1 200") == 2, responses[:400]


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_a_request_may_take_longer_than_the_header_deadline(tmp_path, tiny_vit_folder, parser):
    def slow_classifier(settings: ServeSettings) -> Classifier:
        classifier = Classifier.load(tiny_vit_folder, runtime="torch")
        prepare = classifier.prepare

        def slow_prepare(data: bytes):  # outlives the 0.5 s header deadline
            time.sleep(1.5)
            return prepare(data)

        classifier.prepare = slow_prepare  # type: ignore[method-assign]
        return classifier

    settings = ServeSettings(
        data_dir=tmp_path, port=free_port(), header_timeout_s=0.5, http_parser=parser
    )
    with live_server(settings, slow_classifier), _connect(settings.port) as sock:
        # The whole request in one packet: headers, body and end of request at once.
        sock.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_png()), _png())
        )
        assert _read_all(sock).startswith(b"HTTP/1.1 200")


def test_a_silent_connection_is_closed(live):
    with _connect(live) as sock:
        started = time.monotonic()
        assert _read_all(sock) == b""
        assert time.monotonic() - started < 5


def test_a_slow_body_gets_408(live):
    with _connect(live) as sock:
        sock.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 1000\r\n\r\n" + b"\x89PNG"
        )
        started = time.monotonic()
        response = _read_all(sock)
        assert response.startswith(b"HTTP/1.1 408"), response[:200]
        assert b'"code":"request_timeout"' in response
        assert time.monotonic() - started < 5


def test_the_content_type_is_checked_before_the_body_is_read(live):
    with _connect(live) as sock:
        sock.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 10000000\r\n\r\n"
        )
        started = time.monotonic()
        head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 415"), head[:200]
        assert time.monotonic() - started < 0.9  # before the body deadline


def test_connections_per_client_are_capped(live):
    held = [_connect(live) for _ in range(4)]
    try:
        time.sleep(0.2)
        with _connect(live) as extra:
            response = _read_all(extra)
        assert response.startswith(b"HTTP/1.1 429")
        assert b"too_many_connections" in response
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    with _connect(live) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _read_all(sock).startswith(b"HTTP/1.1 200")


def test_a_non_ascii_digit_in_a_bearer_token_is_401(live):
    # Sent as raw bytes: b"\xb2" reaches the app as "²", which isdigit() accepts and
    # int() refuses (the test client would re-encode it).
    with _connect(live) as sock:
        sock.sendall(
            b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer pgk_\xb2_x\r\n"
            b"Connection: close\r\n\r\n"
        )
        response = _read_all(sock)
    assert response.startswith(b"HTTP/1.1 401"), response[:300]
    assert b'"code":"unauthorized"' in response


def _large_canvas_gif(frames: int = 3) -> bytes:
    """2600 x 1600 (4.2 MP, a heavy image) and several frames, in a small file."""
    images = [Image.new("P", (2600, 1600), color=i) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=100)
    return buffer.getvalue()


def test_a_small_image_is_answered_while_heavy_gifs_decode(tmp_path, tiny_vit_folder):
    gif = _large_canvas_gif()
    assert declared_pixels(gif) >= HEAVY_PIXELS
    gif_decoding = threading.Event()
    release = threading.Event()

    def gated_classifier(settings: ServeSettings) -> Classifier:
        classifier = Classifier.load(tiny_vit_folder, runtime="torch")
        prepare = classifier.prepare

        def gated_prepare(data: bytes):
            # A GIF's decode waits for the test: "still decoding" is a fact, not a race.
            if data == gif:
                gif_decoding.set()
                assert release.wait(120)
            return prepare(data)

        classifier.prepare = gated_prepare  # type: ignore[method-assign]
        return classifier

    finished: list[tuple[str, int]] = []

    def post(url: str, name: str, data: bytes, content_type: str) -> None:
        response = httpx.post(
            f"{url}/v1/classify", content=data, headers={"content-type": content_type}, timeout=120
        )
        finished.append((name, response.status_code))

    settings = ServeSettings(data_dir=tmp_path, port=free_port(), request_timeout_s=120)
    with live_server(settings, gated_classifier) as url:
        heavy = [
            threading.Thread(target=post, args=(url, f"gif{i}", gif, "image/gif")) for i in range(3)
        ]
        for thread in heavy:
            thread.start()
        try:
            assert gif_decoding.wait(60)
            time.sleep(0.2)  # let the other GIF requests reach their decode too
            small = threading.Thread(target=post, args=(url, "small", _png(), "image/png"))
            small.start()
            small.join(60)
            assert finished == [("small", 200)]  # answered while every GIF still decodes
        finally:
            release.set()
            for thread in heavy:
                thread.join(120)
    assert sorted(finished[1:]) == [("gif0", 200), ("gif1", 200), ("gif2", 200)]
