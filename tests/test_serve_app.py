"""The service app in-process (FastAPI's TestClient runs its lifespan): the parts
that need no real socket."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pixguard import Classifier
from pixguard.serve import ServeSettings, create_app


def _factory(folder: Path):
    return lambda settings: Classifier.load(folder, runtime="torch", threshold=settings.threshold)


def test_the_generation_gate_is_built_once(tmp_path, tiny_vit_folder, caplog):
    from pixguard.testing import tiny_sd3_pipeline

    pipeline = tiny_sd3_pipeline(tmp_path / "sd3")
    settings = ServeSettings(
        data_dir=tmp_path / "data",
        generate_variant=str(pipeline),
        generate_safety_action="allow-flagged",
    )
    app = create_app(settings, classifier_factory=_factory(tiny_vit_folder))
    with caplog.at_level(logging.WARNING, logger="pixguard.generate"), TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        gate = app.state.service.jobs._generator.gate
        assert gate.classifier is app.state.service.classifier
    opt_outs = [r for r in caplog.records if "SAFETY GATE OPT-OUT" in r.getMessage()]
    assert len(opt_outs) == 1


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_vit_folder):
    settings = ServeSettings(data_dir=tmp_path_factory.mktemp("data"))
    with TestClient(create_app(settings, classifier_factory=_factory(tiny_vit_folder))) as client:
        yield client


def test_every_area_has_its_routes(client):
    paths = set(client.get("/openapi.json").json()["paths"])
    assert {
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/models",
        "/v1/classify",
        "/v1/embed",
        "/v1/decisions",
        "/v1/index/search",
        "/v1/index/add",
        "/v1/generate",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/events",
        "/v1/jobs/{job_id}/images/{position}",
    } <= paths


# --- errors are JSON, bad input is 4xx --------------------------------------------


def _png(size: int = 48, seed: int = 0) -> bytes:
    from tests.helpers import encode, gradient_image

    return encode(gradient_image(size, size, seed=seed), "PNG")


def _assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_unknown_route_wrong_method_and_bad_query_are_json(client):
    _assert_error(client.get("/v1/nope"), 404, "not_found")
    _assert_error(client.get("/v1/classify"), 405, "method_not_allowed")
    body = _assert_error(client.get("/v1/decisions", params={"limit": "x"}), 422, "invalid_request")
    assert "limit" in body["message"]


@pytest.mark.parametrize("param", ["after_id", "key_id"])
def test_twenty_digit_ids_are_422(client, param):
    _assert_error(client.get("/v1/decisions", params={param: "9" * 20}), 422, "invalid_request")


def test_svg_and_pdf_are_415(client):
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    _assert_error(
        client.post("/v1/classify", content=svg, headers={"content-type": "image/svg+xml"}),
        415,
        "unsupported_media_type",
    )
    pdf = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"
    _assert_error(
        client.post("/v1/classify", content=pdf, headers={"content-type": "application/pdf"}),
        415,
        "unsupported_media_type",
    )
    # Sent as if it were a JPEG: recognised and refused as a format.
    _assert_error(
        client.post("/v1/classify", content=pdf, headers={"content-type": "image/jpeg"}),
        415,
        "image_unsupported_format",
    )


def test_bad_multipart_is_json_400(client):
    response = client.post(
        "/v1/classify",
        content=b"--x\r\nContent-Disposition: form-data\r\n\r\nno closing boundary",
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert response.status_code in (400, 422), response.text
    assert set(response.json()) >= {"code", "message", "request_id"}


@pytest.mark.parametrize(
    "given",
    ["x" * 129, "has space", "semi;colon", "ünïcode".encode(), "<script>", ""],
)
def test_bad_client_request_ids_are_replaced(client, given):
    response = client.get("/healthz", headers={"x-request-id": given})
    assert response.headers["x-request-id"] != given
    assert len(response.headers["x-request-id"]) == 32


def test_good_client_request_id_is_kept(client):
    response = client.get("/healthz", headers={"x-request-id": "req-42.a:b_c"})
    assert response.headers["x-request-id"] == "req-42.a:b_c"


def test_an_unhandled_error_is_logged_with_request_id_and_exception(client, caplog):
    from pixguard.serve import get_service

    def broken() -> None:
        raise RuntimeError("the disk caught fire")

    client.app.dependency_overrides[get_service] = broken
    try:
        with caplog.at_level(logging.ERROR, logger="pixguard.serve"):
            response = client.get("/v1/models", headers={"x-request-id": "trace-me"})
    finally:
        client.app.dependency_overrides.clear()
    _assert_error(response, 500, "internal_error")
    logged = [r.getMessage() for r in caplog.records if "unhandled_error" in r.getMessage()]
    assert logged
    entry = __import__("json").loads(logged[-1])
    assert entry["request_id"] == "trace-me"
    assert "the disk caught fire" in entry["error"]
    assert "RuntimeError" in entry["traceback"]


# --- auth ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_client(tmp_path_factory, tiny_vit_folder):
    settings = ServeSettings(data_dir=tmp_path_factory.mktemp("auth"), auth="on")
    with TestClient(create_app(settings, classifier_factory=_factory(tiny_vit_folder))) as client:
        yield client


@pytest.mark.parametrize(
    "token",
    ["pgk_12345678901234567890_secret", "pgk__x", "pgk_1_", "nonsense"],
)
def test_malformed_bearer_tokens_are_401(auth_client, token):
    # "pgk_²_x" needs raw header bytes: see test_serve_connections.py.
    response = auth_client.get("/v1/models", headers={"authorization": f"Bearer {token}"})
    _assert_error(response, 401, "unauthorized")


# --- limits -------------------------------------------------------------------------


def _files(count: int) -> list:
    return [("f", (f"{i}.png", _png(32, i), "image/png")) for i in range(count)]


def test_too_many_images_is_413(tmp_path, tiny_vit_folder):
    settings = ServeSettings(data_dir=tmp_path, max_images_per_request=2)
    app = create_app(settings, classifier_factory=_factory(tiny_vit_folder))
    with TestClient(app) as client:
        assert client.post("/v1/classify", files=_files(2)).status_code == 200
        for count in (3, 6):
            _assert_error(client.post("/v1/classify", files=_files(count)), 413, "too_many_images")


def test_request_pixel_budget(tmp_path, tiny_vit_folder):
    # Three 48x48 images (2,304 pixels each) against a 5,000-pixel budget.
    settings = ServeSettings(data_dir=tmp_path, max_request_pixels=5_000)
    app = create_app(settings, classifier_factory=_factory(tiny_vit_folder))
    with TestClient(app) as client:
        files = [("f", (f"{i}.png", _png(48, i), "image/png")) for i in range(3)]
        results = client.post("/v1/classify", files=files).json()["results"]
    assert [r["error"] is None for r in results] == [True, True, False]
    assert results[2]["error"]["code"] == "image_too_many_pixels"
    assert "5,000-pixel budget" in results[2]["error"]["message"]


def test_429_comes_before_any_decoding(tmp_path, tiny_vit_folder):
    settings = ServeSettings(data_dir=tmp_path, queue_size=2)
    app = create_app(settings, classifier_factory=_factory(tiny_vit_folder))
    with TestClient(app) as client:
        service = app.state.service
        decoded = []
        original = service.classifier.prepare
        service.classifier.prepare = lambda data: decoded.append(1) or original(data)
        with service.batcher.admit(2):  # other requests hold the whole queue
            response = client.post(
                "/v1/classify", content=_png(), headers={"content-type": "image/png"}
            )
            _assert_error(response, 429, "queue_full")
            assert response.headers["retry-after"]
            assert decoded == []
        ok = client.post("/v1/classify", content=_png(), headers={"content-type": "image/png"})
        assert ok.status_code == 200
        assert decoded == [1]


def test_heavy_images_decode_in_their_own_pool(tmp_path, tiny_vit_folder):
    from PIL import Image

    from tests.helpers import encode

    settings = ServeSettings(data_dir=tmp_path)
    app = create_app(settings, classifier_factory=_factory(tiny_vit_folder))
    heavy = encode(Image.new("L", (2500, 2000), 7), "PNG")  # 5 MP, a small file
    with TestClient(app) as client:
        service = app.state.service
        threads = []
        original = service.classifier.prepare
        service.classifier.prepare = lambda data: (
            threads.append(__import__("threading").current_thread().name) or original(data)
        )
        for data in (_png(), heavy):
            assert (
                client.post(
                    "/v1/classify", content=data, headers={"content-type": "image/png"}
                ).status_code
                == 200
            )
    assert threads[0].startswith("pixguard-decode_")
    assert threads[1].startswith("pixguard-decode-heavy")


def test_readyz_tells_the_truth_when_the_batcher_is_gone(tmp_path, tiny_vit_folder):
    settings = ServeSettings(data_dir=tmp_path)
    app = create_app(settings, classifier_factory=_factory(tiny_vit_folder))
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        app.state.service.batcher.close()
        assert client.get("/readyz").status_code == 503
        response = client.post(
            "/v1/classify", content=_png(), headers={"content-type": "image/png"}
        )
        assert response.status_code == 429


def test_auth_off_beyond_loopback_warns_loudly(tmp_path, tiny_vit_folder, caplog):
    settings = ServeSettings(data_dir=tmp_path, host="0.0.0.0", auth="off")
    app = create_app(settings, classifier_factory=_factory(tiny_vit_folder))
    with caplog.at_level(logging.WARNING, logger="pixguard.serve"), TestClient(app):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("AUTHENTICATION IS OFF" in w and "0.0.0.0" in w for w in warnings)


def test_no_warning_for_auth_off_on_loopback(tmp_path, tiny_vit_folder, caplog):
    settings = ServeSettings(data_dir=tmp_path, auth="off")
    app = create_app(settings, classifier_factory=_factory(tiny_vit_folder))
    with caplog.at_level(logging.WARNING, logger="pixguard.serve"), TestClient(app):
        pass
    assert not any("AUTHENTICATION IS OFF" in r.getMessage() for r in caplog.records)


def test_default_data_dir_is_per_user(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("PIXGUARD_DATA_DIR", raising=False)
    assert ServeSettings().data_dir == tmp_path / "xdg" / "pixguard"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert ServeSettings().data_dir == Path.home() / ".local" / "share" / "pixguard"


def test_the_service_decodes_with_its_per_file_budget(tiny_vit_folder, tmp_path):
    from pixguard.serve._state import load_classifier

    settings = ServeSettings(
        data_dir=tmp_path,
        model=str(tiny_vit_folder),
        runtime="torch",
        max_pixels=1_000_000,
        max_file_pixels=3_000_000,
    )
    classifier = load_classifier(settings)
    try:
        assert classifier.limits.max_animation_pixels == 3_000_000
        assert classifier.limits.max_pixels == 1_000_000
    finally:
        classifier.close()


def test_request_timeout_covers_decoding(tmp_path, tiny_vit_folder):
    import time

    settings = ServeSettings(data_dir=tmp_path, request_timeout_s=0.5)
    app = create_app(settings, classifier_factory=_factory(tiny_vit_folder))
    with TestClient(app) as client:
        service = app.state.service
        original = service.classifier.prepare

        def slow_decode(data):  # a decode that takes longer than the request may
            time.sleep(2.0)
            return original(data)

        service.classifier.prepare = slow_decode
        started = time.monotonic()
        response = client.post(
            "/v1/classify", content=_png(), headers={"content-type": "image/png"}
        )
        elapsed = time.monotonic() - started
    _assert_error(response, 504, "timeout")
    assert elapsed < 1.8


def test_audit_runs_on_its_own_threads_and_the_data_dir_is_shown(tmp_path, tiny_vit_folder, caplog):
    import json
    import threading

    settings = ServeSettings(data_dir=tmp_path / "here")
    app = create_app(settings, classifier_factory=_factory(tiny_vit_folder))
    with caplog.at_level(logging.INFO, logger="pixguard.serve"), TestClient(app) as client:
        service = app.state.service
        threads = []
        original = service.audit.record
        service.audit.record = lambda rows: (
            threads.append(threading.current_thread().name) or original(rows)
        )
        client.post("/v1/classify", content=_png(), headers={"content-type": "image/png"})
    assert threads and threads[0].startswith("pixguard-store")
    ready = [
        json.loads(r.getMessage()) for r in caplog.records if '"event": "ready"' in r.getMessage()
    ]
    assert ready[0]["data_dir"] == str((tmp_path / "here").resolve())


@pytest.mark.parametrize(
    ("query", "code"),
    [
        *((f"key_id={key_id}", "invalid_key_id") for key_id in ("²", "abc", "9" * 20, "-1")),
        ("since=yesterday", "invalid_date"),
        ("until=2026-13-01", "invalid_date"),
    ],
)
def test_console_decision_filters_refuse_bad_values(client, query, code):
    # The page shows its own error view; the CSV download answers like the API.
    page = client.get(f"/decisions?{query}")
    assert page.status_code == 422
    assert page.headers["content-type"].startswith("text/html")
    assert "<h1>" in page.text and "is not a" in page.text
    _assert_error(client.get(f"/decisions.csv?{query}"), 422, code)


def test_console_decision_filters_are_shared_by_the_page_and_the_csv(client):
    client.post("/v1/classify", content=_png(seed=7), headers={"content-type": "image/png"})
    today = dt.datetime.now(dt.UTC).date()
    since, until = (
        (today - dt.timedelta(days=1)).isoformat(),
        (today + dt.timedelta(days=1)).isoformat(),
    )
    query = f"label=&action=&key_id=&since={since}&until={until}"  # empty fields mean "any"
    page = client.get(f"/decisions?{query}")
    assert page.status_code == 200
    # The CSV link carries the page's filters, without the empty ones.
    assert f'href="/decisions.csv?since={since}&amp;until={until}"' in page.text
    csv_rows = client.get(f"/decisions.csv?{query}").text.strip().splitlines()
    assert len(csv_rows) >= 2  # the header and the row just classified
    nothing = client.get("/decisions.csv?since=2000-01-01&until=2000-01-01")
    assert nothing.text.strip().splitlines() == csv_rows[:1]


def test_console_pages_are_served_but_not_in_the_schema(client):
    paths = set(client.get("/openapi.json").json()["paths"])
    console = ["/login", "/moderate", "/decisions", "/decisions.csv", "/stats", "/docs"]
    assert not paths & set(console)
    for path in console:
        assert client.get(path).status_code == 200, path
