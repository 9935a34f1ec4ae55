"""ControlNet options on the service's /v1/generate (in-process, TestClient)."""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pixguard import Classifier
from pixguard.serve import ServeSettings, create_app
from pixguard.testing import tiny_sd3_pipeline
from tests.helpers import build_tiny_sd3_controlnet, encode, gradient_image


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_vit_folder):
    work = tmp_path_factory.mktemp("serve-control")
    settings = ServeSettings(
        data_dir=work / "data",
        generate_variant=str(tiny_sd3_pipeline(work / "sd3", num_layers=2)),
        generate_control_models={"canny": str(build_tiny_sd3_controlnet(work / "controlnet"))},
        threshold=1.0,  # every output allowed, which the gate takes only with the opt-out
        generate_safety_action="allow-flagged",
        max_upload_bytes=64 * 1024,
    )

    def factory(settings):
        return Classifier.load(tiny_vit_folder, runtime="torch", threshold=settings.threshold)

    with TestClient(create_app(settings, classifier_factory=factory)) as client:
        yield client


def _finished(client, job_id: str) -> dict:
    deadline = time.monotonic() + 120
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in (
        "done",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return job


def _image(client, job: dict) -> np.ndarray:
    import io

    png = client.get(job["results"][0]["image"]).content
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)


BODY = {"prompt": "a cat", "steps": 2, "width": 32, "height": 32, "seed": 3, "guidance": 5.0}
CONTROL = base64.b64encode(encode(gradient_image(32, 32, seed=3).rotate(30), "PNG")).decode()


def test_generate_takes_the_controlnet_options(client):
    plain = _finished(client, client.post("/v1/generate", json=BODY).json()["id"])
    # A client cannot choose the ControlNet: control_model is not a request field.
    body = {**BODY, "control": "canny", "control_image": CONTROL, "control_model": "/elsewhere"}
    created = client.post("/v1/generate", json=body)
    assert created.status_code == 202, created.text
    guided = _finished(client, created.json()["id"])
    assert guided["status"] == "done", guided
    assert guided["results"][0]["decision"] == "allowed"
    assert np.abs(_image(client, guided) - _image(client, plain)).mean() > 1.0
    muted = client.post("/v1/generate", json={**body, "control_scale": 0.0}).json()
    assert np.abs(_image(client, _finished(client, muted["id"])) - _image(client, plain)).max() <= 1


def test_control_mistakes_are_clear_errors(client):
    bad_base64 = client.post(
        "/v1/generate", json={**BODY, "control": "canny", "control_image": "%%"}
    )
    assert bad_base64.status_code == 422
    assert bad_base64.json()["code"] == "request_invalid"
    unknown = client.post(
        "/v1/generate", json={**BODY, "control": "pose", "control_image": CONTROL}
    )
    assert unknown.status_code == 422
    assert "control" in unknown.json()["message"]
    too_big = client.post(
        "/v1/generate", json={**BODY, "control": "canny", "control_image": "A" * 100_000}
    )
    assert too_big.status_code == 413
    not_an_image = base64.b64encode(b"not an image").decode()
    created = client.post(
        "/v1/generate", json={**BODY, "control": "canny", "control_image": not_an_image}
    )
    failed = _finished(client, created.json()["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "image_not_an_image"
    no_image = _finished(
        client, client.post("/v1/generate", json={**BODY, "control": "blur"}).json()["id"]
    )
    assert no_image["error"]["code"] == "generation_invalid"
