"""The service app in-process (FastAPI's TestClient runs its lifespan): the parts
that need no real socket."""

from __future__ import annotations

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
