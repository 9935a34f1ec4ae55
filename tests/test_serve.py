"""The HTTP service, as a real server process on loopback, driven with httpx."""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.helpers import encode, gradient_image


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.data = tmp / "data"
        self.log = (tmp / f"server-{self.port}.log").open("w")
        command = [
            sys.executable,
            "-m",
            "pixguard",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data),
            *args,
        ]
        self.process = subprocess.Popen(
            command,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(Path(self.log.name).read_text())
            time.sleep(0.2)
        raise RuntimeError("server did not become ready")

    def stop(self) -> bool:
        """SIGTERM, then True when the server shut down cleanly (uvicorn re-raises
        the signal after its graceful shutdown, so the exit status is -SIGTERM)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.log.close()
        return (
            code in (0, -signal.SIGTERM) and '"event": "stopped"' in Path(self.log.name).read_text()
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_vit_folder):
    srv = Server(
        tmp_path_factory.mktemp("srv"),
        "--model",
        str(tiny_vit_folder),
        "--runtime",
        "torch",
        env={"PIXGUARD_MAX_UPLOAD_BYTES": "300000", "PIXGUARD_MAX_PIXELS": "1000000"},
    )
    yield srv
    assert srv.stop()


def _jpeg(seed: int = 0, size: int = 96) -> bytes:
    return encode(gradient_image(size, size, seed=seed), "JPEG")


def test_health_models_and_openapi(server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").json() == {"ready": True}
    models = httpx.get(f"{server.url}/v1/models").json()
    assert models["loaded"]["runtime"] == "torch/fp32"
    assert "opennsfw" in {m["name"] for m in models["registry"]}
    assert "/v1/classify" in httpx.get(f"{server.url}/openapi.json").json()["paths"]


def test_classify_raw_body_and_embedding(server, tiny_vit_folder):
    from pixguard import Classifier

    data = _jpeg(1)
    response = httpx.post(
        f"{server.url}/v1/classify?embedding=true",
        content=data,
        headers={"content-type": "image/jpeg"},
    )
    assert response.status_code == 200
    body = response.json()
    result = body["results"][0]
    expected = Classifier.load(tiny_vit_folder, runtime="torch").classify(data)
    assert result["nsfw_score"] == pytest.approx(expected.nsfw_score, abs=1e-5)
    assert len(result["embedding"]) == 192
    assert result["sha256"] == __import__("hashlib").sha256(data).hexdigest()
    assert response.headers["x-request-id"] == body["request_id"]
    embedded = httpx.post(
        f"{server.url}/v1/embed", content=data, headers={"content-type": "image/jpeg"}
    ).json()
    assert embedded["results"][0]["embedding"] == pytest.approx(result["embedding"], abs=1e-5)


def test_multipart_with_one_bad_file(server):
    files = [
        ("a", ("a.jpg", _jpeg(2), "image/jpeg")),
        ("b", ("b.txt", b"not an image", "text/plain")),
        ("c", ("c.png", encode(gradient_image(80, 60, seed=3), "PNG"), "image/png")),
    ]
    response = httpx.post(f"{server.url}/v1/classify", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["filename"] for r in results] == ["a.jpg", "b.txt", "c.png"]
    assert results[1]["error"]["code"] == "image_not_an_image"
    assert results[0]["error"] is None
    assert results[2]["label"] in {"nsfw", "sfw"}


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"x" * 400_000, "image/jpeg", 413, "image_too_large"),
        (b"plain text", "text/plain", 415, "unsupported_media_type"),
        (b"not an image", "image/jpeg", 422, "image_not_an_image"),
        (b"", "image/jpeg", 422, "image_empty"),
    ],
)
def test_error_paths(server, content, content_type, status, code):
    response = httpx.post(
        f"{server.url}/v1/classify", content=content, headers={"content-type": content_type}
    )
    assert response.status_code == status
    body = response.json()
    assert body["code"] == code
    assert body["request_id"] == response.headers["x-request-id"]


def test_too_many_pixels_is_422(server):
    big = encode(
        Image.new("RGB", (1200, 1000), (9, 9, 9)), "PNG"
    )  # 1.2 MP > 1 MP limit, small file
    response = httpx.post(
        f"{server.url}/v1/classify", content=big, headers={"content-type": "image/png"}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "image_too_many_pixels"


def test_audit_log_holds_every_decision(server):
    before = httpx.get(f"{server.url}/v1/decisions", params={"limit": 1000}).json()["decisions"]
    data = _jpeg(7)
    for _ in range(3):
        httpx.post(
            f"{server.url}/v1/classify", content=data, headers={"content-type": "image/jpeg"}
        )
    after = httpx.get(f"{server.url}/v1/decisions", params={"limit": 1000}).json()["decisions"]
    assert len(after) == len(before) + 3
    digest = __import__("hashlib").sha256(data).hexdigest()
    mine = httpx.get(f"{server.url}/v1/decisions", params={"sha256": digest}).json()["decisions"]
    assert len(mine) == 3
    assert {d["model"] for d in mine} == {after[-1]["model"]}
    page = httpx.get(f"{server.url}/v1/decisions", params={"limit": 2}).json()
    following = httpx.get(
        f"{server.url}/v1/decisions", params={"limit": 2, "after_id": page["next_after_id"]}
    ).json()
    assert following["decisions"][0]["id"] > page["decisions"][-1]["id"]


def _batch_metrics(url: str) -> tuple[float, float]:
    """(forward passes, images run) so far, from the service's Prometheus metrics."""
    metrics = httpx.get(f"{url}/metrics").text

    def value(name: str) -> float:
        return float(
            next(line.split()[1] for line in metrics.splitlines() if line.startswith(name))
        )

    return value("pixguard_batch_size_count"), value("pixguard_batch_size_sum")


def test_concurrent_requests_are_batched(server):
    # The server is shared with the tests before this one: count from here on.
    count_before, total_before = _batch_metrics(server.url)
    data = [_jpeg(seed) for seed in range(24)]
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        statuses = list(
            pool.map(
                lambda d: (
                    httpx.post(
                        f"{server.url}/v1/classify",
                        content=d,
                        headers={"content-type": "image/jpeg"},
                        timeout=60,
                    ).status_code
                ),
                data,
            )
        )
    assert statuses == [200] * 24
    count, total = _batch_metrics(server.url)
    # Every request was served by a counted forward pass. How many shared one
    # depends on timing on a shared machine; tests/test_batcher.py checks the
    # batching itself deterministically.
    assert total - total_before == 24
    assert 1 <= count - count_before <= 24
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'pixguard_requests_total{route="/v1/classify",status="200"}' in metrics
    # Every classify request has been answered: only this /metrics request is open.
    assert _metric(metrics, "pixguard_requests_in_flight ") == 1


def test_auth_keys_and_rate_limit(tmp_path, tiny_vit_folder):
    data_dir = tmp_path / "data"
    created = subprocess.run(
        [sys.executable, "-m", "pixguard", "keys", "create", "ci", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    token = json.loads(created.stdout)["token"]
    auditor = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pixguard",
                "keys",
                "create",
                "auditor",
                "--role",
                "admin",
                "--data-dir",
                str(data_dir),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["token"]
    assert token not in (data_dir / "keys.db").read_bytes().decode(
        "latin-1"
    )  # stored as a hash only
    server = Server(
        tmp_path,
        "--model",
        str(tiny_vit_folder),
        "--runtime",
        "torch",
        "--auth",
        "on",
        env={"PIXGUARD_RATE_LIMIT_PER_MINUTE": "5"},
    )
    try:
        image = {"content": _jpeg(3), "headers": {"content-type": "image/jpeg"}}
        assert httpx.post(f"{server.url}/v1/classify", **image).status_code == 401
        bad = httpx.post(
            f"{server.url}/v1/classify",
            content=image["content"],
            headers={**image["headers"], "authorization": "Bearer pgk_1_wrong"},
        )
        assert bad.status_code == 401
        good_headers = {**image["headers"], "authorization": f"Bearer {token}"}
        statuses = [
            httpx.post(
                f"{server.url}/v1/classify", content=image["content"], headers=good_headers
            ).status_code
            for _ in range(7)
        ]
        assert statuses[:5] == [200] * 5
        assert 429 in statuses[5:]
        limited = httpx.post(
            f"{server.url}/v1/classify", content=image["content"], headers=good_headers
        )
        assert limited.headers.get("retry-after")
        # Another key has its own budget: the authenticated path is checked for real
        # (an admin key, which sees every key's rows).
        decisions = httpx.get(
            f"{server.url}/v1/decisions", headers={"authorization": f"Bearer {auditor}"}
        )
        assert decisions.status_code == 200, decisions.text
        assert len(decisions.json()["decisions"]) == 5
        assert httpx.get(f"{server.url}/v1/decisions").status_code == 401
        log = Path(server.log.name).read_text()
        assert token not in log
    finally:
        server.stop()
    subprocess.run(
        [sys.executable, "-m", "pixguard", "keys", "revoke", "1", "--data-dir", str(data_dir)],
        check=True,
    )
    listed = json.loads(
        subprocess.run(
            [sys.executable, "-m", "pixguard", "keys", "list", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert listed[0]["revoked"] is True


def test_burst_over_a_small_queue_gets_429(tmp_path, full_vit_folder):
    server = Server(
        tmp_path,
        "--model",
        str(full_vit_folder),
        "--runtime",
        "torch",
        env={"PIXGUARD_QUEUE_SIZE": "1", "PIXGUARD_MAX_BATCH_SIZE": "1"},
    )
    try:
        data = [_jpeg(seed, 384) for seed in range(16)]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            responses = list(
                pool.map(
                    lambda d: httpx.post(
                        f"{server.url}/v1/classify",
                        content=d,
                        headers={"content-type": "image/jpeg"},
                        timeout=120,
                    ),
                    data,
                )
            )
        statuses = [r.status_code for r in responses]
        assert 429 in statuses
        assert 200 in statuses
        assert set(statuses) <= {200, 429}
        assert all(r.headers.get("retry-after") for r in responses if r.status_code == 429)
    finally:
        server.stop()


def _metric(metrics: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name))


def _wait_until_received(url: str, classify_requests: int, timeout_s: float = 60) -> None:
    """Until the server has received ``classify_requests`` classify requests (in flight
    or answered): a fixed sleep let SIGTERM arrive before the last ones on a busy machine."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{url}/metrics").text
        in_flight = _metric(metrics, "pixguard_requests_in_flight ") - 1  # this /metrics
        answered = _metric(metrics, 'pixguard_requests_total{route="/v1/classify"')
        if in_flight + answered >= classify_requests:
            return
        time.sleep(0.02)
    raise AssertionError(f"the server did not receive {classify_requests} requests")


def test_sigterm_drains_in_flight_requests(tmp_path, full_vit_folder):
    server = Server(
        tmp_path,
        "--model",
        str(full_vit_folder),
        "--runtime",
        "torch",
        env={"PIXGUARD_MAX_BATCH_SIZE": "2"},
    )
    data = [_jpeg(seed, 384) for seed in range(6)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [
            pool.submit(
                httpx.post,
                f"{server.url}/v1/classify",
                content=d,
                headers={"content-type": "image/jpeg"},
                timeout=120,
            )
            for d in data
        ]
        _wait_until_received(server.url, len(data))
        server.process.send_signal(signal.SIGTERM)
        statuses = [f.result().status_code for f in futures]
    assert statuses == [200] * 6
    assert server.stop()


def test_client_disconnecting_mid_upload_costs_nothing(server):
    before = httpx.get(f"{server.url}/v1/decisions", params={"limit": 1000}).json()["decisions"]
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                b"Content-Length: 200000\r\n\r\n" + b"\xff" * 1000
            )
    time.sleep(0.5)
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    ok = httpx.post(
        f"{server.url}/v1/classify", content=_jpeg(11), headers={"content-type": "image/jpeg"}
    )
    assert ok.status_code == 200
    after = httpx.get(f"{server.url}/v1/decisions", params={"limit": 1000}).json()["decisions"]
    assert len(after) == len(before) + 1  # the abandoned uploads left no decision
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "pixguard_queue_depth 0.0" in metrics


def test_index_routes(tmp_path, tiny_vit_folder):
    server = Server(
        tmp_path,
        "--model",
        str(tiny_vit_folder),
        "--runtime",
        "torch",
        "--index",
        str(tmp_path / "idx"),
    )
    try:
        headers = {"content-type": "image/jpeg"}
        added = httpx.post(
            f"{server.url}/v1/index/add", params={"tags": "a,b"}, content=_jpeg(21), headers=headers
        )
        assert added.status_code == 200, added.text
        assert added.json()["added"] == 1
        again = httpx.post(f"{server.url}/v1/index/add", content=_jpeg(21), headers=headers).json()
        assert again["duplicates"] == 1
        httpx.post(f"{server.url}/v1/index/add", content=_jpeg(22), headers=headers)
        hits = httpx.post(
            f"{server.url}/v1/index/search", params={"k": 2}, content=_jpeg(21), headers=headers
        ).json()["hits"]
        assert hits[0]["id"] == 1
        assert hits[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
        assert hits[0]["tags"] == ["a", "b"]
    finally:
        assert server.stop()


def test_generation_jobs(tmp_path, tiny_vit_folder):
    from pixguard.testing import tiny_sd3_pipeline

    pipeline = tiny_sd3_pipeline(tmp_path / "sd3")
    server = Server(
        tmp_path,
        "--model",
        str(tiny_vit_folder),
        "--runtime",
        "torch",
        "--generate-variant",
        str(pipeline),
        # Threshold 1.0 lets everything through, which the gate takes only with the opt-out.
        env={"PIXGUARD_THRESHOLD": "1.0", "PIXGUARD_GENERATE_SAFETY_ACTION": "allow-flagged"},
    )
    try:
        body = {
            "prompt": "a cat",
            "steps": 3,
            "width": 32,
            "height": 32,
            "seed": 9,
            "num_images": 2,
        }
        created = httpx.post(f"{server.url}/v1/generate", json=body)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        events = []
        with httpx.stream("GET", f"{server.url}/v1/jobs/{job_id}/events", timeout=120) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
        assert events[-1]["status"] == "done"
        assert any(e["status"] == "running" and e["step"] > 0 for e in events)
        job = httpx.get(f"{server.url}/v1/jobs/{job_id}").json()
        assert [r["seed"] for r in job["results"]] == [9, 10]
        assert all(r["decision"] == "allowed" for r in job["results"])
        png = httpx.get(f"{server.url}{job['results'][0]['image']}")
        assert png.status_code == 200
        assert "Seed: 9" in Image.open(io.BytesIO(png.content)).text["parameters"]

        slow = httpx.post(
            f"{server.url}/v1/generate", json={**body, "steps": 200, "num_images": 1}
        ).json()
        time.sleep(0.5)
        cancelled = httpx.delete(f"{server.url}/v1/jobs/{slow['id']}")
        assert cancelled.status_code == 200
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.url}/v1/jobs/{slow['id']}").json()["status"] not in (
            "cancelled",
            "done",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert httpx.get(f"{server.url}/v1/jobs/{slow['id']}").json()["status"] == "cancelled"
        assert httpx.get(f"{server.url}/v1/jobs/nope").status_code == 404
        invalid = httpx.post(f"{server.url}/v1/generate", json={"prompt": ""})
        assert invalid.status_code == 422
    finally:
        assert server.stop()


def test_blocked_generation_keeps_no_image(tmp_path, tiny_vit_folder):
    """Served from a single-file checkpoint, to cover --generate-config too."""
    from pixguard.testing import tiny_sd3_pipeline
    from tests.helpers import save_sd3_single_file, sd3_config_folder

    pipeline = tiny_sd3_pipeline(tmp_path / "sd3")
    checkpoint = save_sd3_single_file(pipeline, tmp_path / "sd3.safetensors", with_clip_l=False)
    config = sd3_config_folder(pipeline, tmp_path / "config", drop=("transformer", "vae"))
    server = Server(
        tmp_path,
        "--model",
        str(tiny_vit_folder),
        "--runtime",
        "torch",
        "--generate-variant",
        str(checkpoint),
        "--generate-config",
        str(config),
        env={"PIXGUARD_THRESHOLD": "0.0"},
    )
    try:
        job_id = httpx.post(
            f"{server.url}/v1/generate",
            json={"prompt": "a cat", "steps": 2, "width": 32, "height": 32},
        ).json()["id"]
        deadline = time.monotonic() + 60
        while (job := httpx.get(f"{server.url}/v1/jobs/{job_id}").json())["status"] != "done":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert job["results"][0]["decision"] == "blocked"
        assert job["results"][0]["image"] is None
        assert httpx.get(f"{server.url}/v1/jobs/{job_id}/images/0").status_code == 404
        assert not list((server.data / "generated").rglob("*.png"))
    finally:
        assert server.stop()
