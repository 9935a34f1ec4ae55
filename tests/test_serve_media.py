"""The service's `?explain=true` and `video/*` bodies, in-process (TestClient)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pixguard import Classifier
from pixguard.serve import ServeSettings, create_app
from tests.helpers import encode, neutral_image, paste_trigger, write_clip
from tests.test_video import FPS, three_part_frames

POLICY = b"""
[default]
review_from = 0.3
block_from = 0.8
"""


@pytest.fixture(scope="module")
def client(tmp_path_factory, trigger_vit_folder: Path):
    data = tmp_path_factory.mktemp("data")
    policy = data / "policy.toml"
    policy.write_bytes(POLICY)
    settings = ServeSettings(data_dir=data, policy=policy)
    app = create_app(
        settings,
        classifier_factory=lambda s: Classifier.load(trigger_vit_folder, runtime="torch"),
    )
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    return write_clip(path, three_part_frames(), fps=FPS).read_bytes()


def test_explain_adds_the_grid(client):
    flagged = encode(paste_trigger(neutral_image(128, seed=10), 80, 80, 32), "PNG")
    response = client.post(
        "/v1/classify?explain=true", content=flagged, headers={"content-type": "image/png"}
    )
    assert response.status_code == 200, response.text
    row = response.json()["results"][0]
    assert row["label"] == "nsfw"
    grid = row["explanation"]
    assert (grid["rows"], grid["cols"]) == (8, 8)
    assert len(grid["values"]) == 8 and all(len(r) == 8 for r in grid["values"])
    plain = client.post("/v1/classify", content=flagged, headers={"content-type": "image/png"})
    assert "explanation" not in plain.json()["results"][0]


def test_a_video_body_gets_a_timeline_and_the_worst_segments_action(client, clip):
    response = client.post("/v1/classify", content=clip, headers={"content-type": "video/mp4"})
    assert response.status_code == 200, response.text
    row = response.json()["results"][0]
    assert row["kind"] == "video"
    assert 2.0 <= row["timestamp"] < 4.0
    assert [s["start"] for s in row["timeline"]] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert row["frames_classified"] == 6
    assert row["action"] == "block"
    assert "worst segment 2.0-3.0 s" in row["reason"]


def test_stop_at_block_on_the_service(client, clip):
    response = client.post(
        "/v1/classify?stop_at_block=true", content=clip, headers={"content-type": "video/mp4"}
    )
    row = response.json()["results"][0]
    assert row["stopped_early"] is True
    assert row["frame_count"] == 2 * FPS + 1


def test_a_corrupt_video_body_is_a_typed_422(client, clip):
    response = client.post(
        "/v1/classify", content=clip[: len(clip) // 2], headers={"content-type": "video/mp4"}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "video_decode_failed"
