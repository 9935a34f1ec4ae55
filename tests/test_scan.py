"""``pixguard scan``: local and Ray engines, Parquet output, resume, bad files, s3://,
videos beside images."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import pixguard.scale as scale
from pixguard import Classifier
from pixguard.cli import app
from pixguard.images import VideoSampling
from pixguard.policy import Policy, decide_worst
from pixguard.scale import ObjectStoreOptions, ScanError, ScanOptions, list_inputs, scan
from tests.helpers import neutral_image, paste_trigger, write_clip

BUCKET = "pixguard-scan"


def test_scale_all_is_the_public_api() -> None:
    for name in scale.__all__:
        assert hasattr(scale, name), name


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory, photos: list[Path]) -> Path:
    """Photos in nested folders, plus files no decoder should accept."""
    folder = tmp_path_factory.mktemp("collection")
    (folder / "nested").mkdir()
    for position, photo in enumerate(photos[:4]):
        target = folder / ("nested" if position % 2 else ".") / photo.name
        shutil.copy(photo, target)
    (folder / "not-an-image.jpg").write_bytes(b"this is text, not a JPEG")
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes(photos[0].read_bytes()[:300])
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return folder


BAD_FILES = {
    "not-an-image.jpg": "image_not_an_image",
    "empty.png": "image_empty",
    "truncated.png": "image_truncated",
}


def _options(model: Path, **overrides: object) -> ScanOptions:
    settings: dict[str, object] = {"model": str(model), "runtime": "torch", "batch_size": 3}
    settings.update(overrides)
    return ScanOptions(**settings)  # type: ignore[arg-type]


def _rows(output: Path) -> list[dict[str, object]]:
    return pq.read_table(output).to_pylist()


def test_local_scan_gives_classify_scores_and_one_row_per_bad_file(
    tmp_path: Path, collection: Path, tiny_vit_folder: Path
) -> None:
    output = tmp_path / "out"
    summary = scan([str(collection)], output, _options(tiny_vit_folder))
    rows = {Path(str(row["path"])).name: row for row in _rows(output)}
    photos = sorted(p for p in collection.rglob("*.*") if p.name not in {*BAD_FILES, "notes.txt"})
    assert set(rows) == {p.name for p in photos} | set(BAD_FILES)

    with Classifier.load(str(tiny_vit_folder), runtime="torch") as classifier:
        expected = classifier.predict(photos)
    for photo, prediction in zip(photos, expected, strict=True):
        row = rows[photo.name]
        assert row["error_code"] is None
        assert row["label"] == prediction.label
        assert row["nsfw_score"] == pytest.approx(prediction.nsfw_score, abs=1e-6)
        assert dict(row["probabilities"]) == pytest.approx(prediction.probabilities, abs=1e-6)
        assert np.allclose(row["embedding"], prediction.embedding, atol=1e-5)
        assert row["size"] == photo.stat().st_size
        assert row["model"] == str(tiny_vit_folder) and row["runtime"] == "torch/fp32"
        import hashlib

        assert row["sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()
    for name, code in BAD_FILES.items():
        assert rows[name]["error_code"] == code
        assert name in str(rows[name]["error_message"])  # names the input, not "<bytes>"
        assert rows[name]["embedding"] is None and rows[name]["label"] is None

    schema = pq.read_schema(next(output.glob("*.parquet")))
    assert schema.field("embedding").type == pa.list_(pa.float32(), 192)
    assert summary.rows == len(rows) and summary.scanned == len(rows)
    assert summary.errors == {code: 1 for code in BAD_FILES.values()}
    assert sum(summary.labels.values()) == len(photos)


def test_rerun_skips_done_inputs_and_refuses_other_settings(
    tmp_path: Path, collection: Path, tiny_vit_folder: Path
) -> None:
    output = tmp_path / "out"
    first = scan([str(collection / "nested")], output, _options(tiny_vit_folder))
    second = scan([str(collection)], output, _options(tiny_vit_folder))
    assert second.skipped == first.scanned and second.scanned == second.rows - first.rows
    paths = [row["path"] for row in _rows(output)]
    assert len(paths) == len(set(paths)) == second.rows

    # A part a killed writer left without its footer: moved aside, its rows redone.
    torn = sorted(output.glob("*.parquet"))[-1]
    lost = pq.read_table(torn).num_rows
    torn.write_bytes(torn.read_bytes()[:100])
    third = scan([str(collection)], output, _options(tiny_vit_folder))
    assert third.scanned == lost and third.rows == second.rows
    assert (output / f".unreadable-{torn.name}").exists()

    with pytest.raises(ScanError, match="other settings") as info:
        scan([str(collection)], output, _options(tiny_vit_folder, threshold=0.3))
    assert info.value.code == "scan_invalid"
    with pytest.raises(ScanError, match="--resume"):
        scan([str(collection)], output, _options(tiny_vit_folder), resume=False)


def test_sources_lists_globs_and_missing(tmp_path: Path, collection: Path) -> None:
    photos = sorted(str(p.absolute()) for p in collection.rglob("*.png"))
    listing = tmp_path / "list.txt"
    listing.write_text("# a comment\n" + "\n".join(photos) + "\n\n")
    table = tmp_path / "list.parquet"
    pq.write_table(pa.table({"path": photos[:2]}), table)
    assert [i.path for i in list_inputs([str(listing)])] == photos
    assert [i.path for i in list_inputs([str(table)])] == photos[:2]
    assert {i.path for i in list_inputs([f"{collection}/**/*.png"])} == set(photos)
    assert all(i.size is not None for i in list_inputs([str(collection)]))
    with pytest.raises(ScanError) as info:
        list_inputs([str(tmp_path / "nowhere")])
    assert info.value.code == "scan_invalid"


def test_resume_after_kill_has_every_row_once(
    tmp_path: Path, photos: list[Path], tiny_vit_folder: Path
) -> None:
    """A scan killed with SIGKILL mid-way, then rerun: every input exactly once."""
    folder = tmp_path / "many"
    folder.mkdir()
    for copy in range(40):
        for photo in photos[:3]:
            shutil.copy(photo, folder / f"{copy:03d}-{photo.name}")
    output = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "pixguard",
        "scan",
        str(folder),
        "--output",
        str(output),
        "--model",
        str(tiny_vit_folder),
        "--runtime",
        "torch",
        "--batch-size",
        "2",
        "--rows-per-file",
        "2",
        "--no-progress",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list(output.glob("part-*.parquet")) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.02)
    assert process.poll() is None, "the scan ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(pq.read_table(output).column("path"))
    assert 0 < done_before < 120

    result = subprocess.run(
        [*command, "--format", "json"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    paths = pq.read_table(output).column("path").to_pylist()
    assert len(paths) == len(set(paths)) == 120
    assert set(paths) == {str(p.absolute()) for p in folder.iterdir()}
    assert f'"skipped": {done_before}' in result.stdout


def test_cli_scan_prints_a_summary_with_policy_actions(
    tmp_path: Path, collection: Path, tiny_vit_folder: Path
) -> None:
    output = tmp_path / "out"
    policy = tmp_path / "policy.toml"
    policy.write_text("[default]\nreview_from = 0.3\nblock_from = 0.9\n")
    result = CliRunner().invoke(
        app,
        [
            "scan",
            str(collection),
            "--output",
            str(output),
            "--model",
            str(tiny_vit_folder),
            "--runtime",
            "torch",
            "--no-embeddings",
            "--policy",
            str(policy),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert '"image_empty": 1' in result.output
    assert "embedding" not in pq.read_schema(next(output.glob("*.parquet"))).names
    rows = _rows(output)
    # Unreadable inputs are blocked; read ones follow the bands of the example policy.
    for row in rows:
        score = row["nsfw_score"]
        expected = (
            "block" if score is None or score >= 0.9 else "review" if score >= 0.3 else "allow"
        )
        assert row["action"] == expected, row
    assert len({row["action"] for row in rows}) >= 2
    assert f'"block": {sum(r["action"] == "block" for r in rows)}' in result.output
    missing = CliRunner().invoke(app, ["scan", str(tmp_path / "nowhere"), "-o", str(output)])
    assert missing.exit_code == 2 and "scan_invalid" in missing.output
    # Refused before any worker starts, with the typed error.
    unknown = CliRunner().invoke(
        app, ["scan", str(collection), "-o", str(tmp_path / "o2"), "--model", "no-such-model"]
    )
    assert unknown.exit_code == 2 and "model_not_found" in unknown.output
    table = f'models."{tiny_vit_folder.name}"'
    policy.write_text(f"[default]\nreview_from = 0.3\n[{table}.labels.porn]\nblock_from = 0.5\n")
    arguments = ["scan", str(collection), "-o", str(tmp_path / "o3"), "--engine", "ray"]
    arguments += ["--model", str(tiny_vit_folder), "--policy", str(policy)]
    mislabelled = CliRunner().invoke(app, arguments)
    assert mislabelled.exit_code == 2 and "policy_label_unknown" in mislabelled.output
    assert not (tmp_path / "o3").exists()


# -- videos ---------------------------------------------------------------------------

CLIP_FPS, CLIP_SIZE, CLIP_TRIGGER = 5, 128, 32
VIDEO_COLUMNS = ("timestamp", "duration", "frames_classified", "timeline")


def _trigger_clip(path: Path) -> Path:
    """3 s at 5 fps: a neutral scene, a second scene holding the trigger the fixture
    model flags (1 s to 2 s), another neutral scene."""
    scenes = [neutral_image(CLIP_SIZE, seed=9300 + i) for i in range(3)]
    frames = [scenes[n // CLIP_FPS] for n in range(3 * CLIP_FPS)]
    for n in range(CLIP_FPS, 2 * CLIP_FPS):
        frames[n] = paste_trigger(frames[n], 40 + n % 4, 40, CLIP_TRIGGER)
    return write_clip(path, frames, fps=CLIP_FPS)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image, a clip the fixture model flags in its middle second, a truncated
    clip, and a file that is neither."""
    folder = tmp_path_factory.mktemp("media")
    neutral_image(CLIP_SIZE, seed=1).save(folder / "still.png")
    clip = _trigger_clip(folder / "clip.mp4")
    data = clip.read_bytes()
    (folder / "corrupt.mp4").write_bytes(data[: len(data) // 2])
    (folder / "notes.txt").write_text("not a medium")
    return folder


def test_scan_gives_videos_the_result_of_predict_video(
    tmp_path: Path, media: Path, trigger_vit_folder: Path
) -> None:
    summary = scan([str(media)], tmp_path / "out", _options(trigger_vit_folder))
    rows = {Path(str(row["path"])).name: row for row in _rows(tmp_path / "out")}
    assert set(rows) == {"still.png", "clip.mp4", "corrupt.mp4"}

    clip = media / "clip.mp4"
    with Classifier.load(str(trigger_vit_folder), runtime="torch") as classifier:
        expected = classifier.predict_video(clip)
        still = classifier.predict([media / "still.png"])[0]
    assert expected.ok and expected.label == "nsfw" and expected.timestamp == 1.0
    video = rows["clip.mp4"]
    assert video["error_code"] is None and video["label"] == "nsfw"
    assert video["nsfw_score"] == pytest.approx(expected.nsfw_score, abs=1e-6)
    assert dict(video["probabilities"]) == pytest.approx(expected.probabilities, abs=1e-6)
    assert np.allclose(video["embedding"], expected.embedding, atol=1e-5)  # the worst frame's
    assert video["timestamp"] == expected.timestamp
    assert video["duration"] == pytest.approx(expected.duration)
    assert video["frames_classified"] == expected.frames_classified == 3
    assert video["timeline"] == [
        {**segment.to_dict(), "nsfw_score": pytest.approx(segment.nsfw_score, abs=1e-6)}
        for segment in expected.timeline
    ]
    assert video["size"] == clip.stat().st_size
    assert video["sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()

    image = rows["still.png"]
    assert image["nsfw_score"] == pytest.approx(still.nsfw_score, abs=1e-6)
    assert image["label"] == "sfw"
    assert all(image[column] is None for column in VIDEO_COLUMNS)

    corrupt = rows["corrupt.mp4"]
    assert corrupt["error_code"] == "video_decode_failed"
    assert "corrupt.mp4" in str(corrupt["error_message"])
    assert corrupt["nsfw_score"] is None and corrupt["embedding"] is None
    assert all(corrupt[column] is None for column in VIDEO_COLUMNS)
    assert corrupt["sha256"] == hashlib.sha256((media / "corrupt.mp4").read_bytes()).hexdigest()
    assert summary.errors == {"video_decode_failed": 1} and summary.labels == {"nsfw": 1, "sfw": 1}


def test_video_limits_keep_their_errors_in_a_scan(
    tmp_path: Path, media: Path, trigger_vit_folder: Path
) -> None:
    from pixguard.images import VideoLimits

    size = (media / "clip.mp4").stat().st_size
    for limits, code in (
        (VideoLimits(max_bytes=size - 1), "video_too_large"),
        (VideoLimits(max_duration=2.0), "video_too_long"),
        (VideoLimits(max_frames=5), "video_too_many_frames"),
    ):
        output = tmp_path / code
        scan([str(media / "clip.mp4")], output, _options(trigger_vit_folder, video_limits=limits))
        (row,) = _rows(output)
        assert row["error_code"] == code and row["nsfw_score"] is None


def test_cli_scan_video_action_follows_the_worst_segment(
    tmp_path: Path, media: Path, trigger_vit_folder: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[default]\nreview_from = 0.3\nblock_from = 0.8\n")
    output = tmp_path / "out"
    arguments = ["scan", str(media), "-o", str(output), "--model", str(trigger_vit_folder)]
    arguments += ["--runtime", "torch", "--policy", str(policy), "--format", "json"]
    result = CliRunner().invoke(app, [*arguments, "--video-fps", "2", "--scene-threshold", "0"])
    assert result.exit_code == 0, result.output
    rows = {Path(str(row["path"])).name: row for row in _rows(output)}

    sampling = VideoSampling(fps=2, scene_threshold=None)
    with Classifier.load(str(trigger_vit_folder), runtime="torch") as classifier:
        expected = classifier.predict_video(media / "clip.mp4", sampling=sampling)
    decision = decide_worst(Policy.load(policy), expected)
    assert decision.action.value == "block"
    video = rows["clip.mp4"]
    assert video["action"] == "block"
    assert video["frames_classified"] == expected.frames_classified == 6
    assert [s["start"] for s in video["timeline"]] == [s.start for s in expected.timeline]
    assert rows["still.png"]["action"] == "allow"
    assert rows["corrupt.mp4"]["action"] == "block"  # unreadable inputs are blocked
    assert json.loads(result.stdout)["actions"] == {"allow": 1, "block": 2}

    # Another sampling is another scan: resuming with it is refused.
    other = CliRunner().invoke(app, [*arguments, "--video-fps", "1"])
    assert other.exit_code == 2 and "video_sampling" in other.output


def test_resume_refuses_the_output_of_an_older_version(
    tmp_path: Path, media: Path, trigger_vit_folder: Path
) -> None:
    output = tmp_path / "out"
    options = _options(trigger_vit_folder)
    scan([str(media)], output, options)
    again = scan([str(media)], output, options)
    assert again.scanned == 0 and again.skipped == 3

    # An older pixguard's manifest lacks the video sampling; its parts, the video columns.
    manifest = output / "_pixguard_scan.json"
    recorded = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({k: v for k, v in recorded.items() if k != "video_sampling"}))
    with pytest.raises(ScanError, match=r"older pixguard.*video_sampling"):
        scan([str(media)], output, options)
    manifest.unlink()
    (part,) = output.glob("*.parquet")
    pq.write_table(pq.read_table(part).drop_columns(list(VIDEO_COLUMNS)), part)
    with pytest.raises(
        ScanError, match="missing: timestamp, duration, frames_classified, timeline"
    ):
        scan([str(media)], output, options)


# -- object stores and Ray ------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint(photos: list[Path], media: Path) -> Iterator[str]:
    """A real S3-compatible server (moto's) on loopback, holding a few photos, a clip
    and a bad file. Credentials go through the usual AWS variables, as in production."""
    import boto3
    from moto.server import ThreadedMotoServer

    saved = {key: os.environ.get(key) for key in _AWS_ENV}
    os.environ.update(_AWS_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=BUCKET)
    for photo in photos[:3]:
        client.put_object(Bucket=BUCKET, Key=f"uploads/day1/{photo.name}", Body=photo.read_bytes())
    client.put_object(Bucket=BUCKET, Key="uploads/day1/broken.jpg", Body=b"\xff\xd8 broken")
    clip = (media / "clip.mp4").read_bytes()
    client.put_object(Bucket=BUCKET, Key="uploads/day2/clip.mp4", Body=clip)
    client.put_object(Bucket=BUCKET, Key="elsewhere/other.png", Body=photos[0].read_bytes())
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}


def test_scan_reads_s3_from_a_loopback_server(
    tmp_path: Path, s3_endpoint: str, photos: list[Path], media: Path, tiny_vit_folder: Path
) -> None:
    store = ObjectStoreOptions(endpoint=s3_endpoint)
    output = tmp_path / "out"
    summary = scan(
        [f"s3://{BUCKET}/uploads"], output, _options(tiny_vit_folder, store=store, batch_size=2)
    )
    rows = {row["path"]: row for row in _rows(output)}
    expected = {f"s3://{BUCKET}/uploads/day1/{p.name}" for p in photos[:3]}
    clip_uri = f"s3://{BUCKET}/uploads/day2/clip.mp4"
    assert set(rows) == expected | {f"s3://{BUCKET}/uploads/day1/broken.jpg", clip_uri}
    assert rows[f"s3://{BUCKET}/uploads/day1/broken.jpg"]["error_code"] == "image_not_an_image"
    clip = media / "clip.mp4"
    with Classifier.load(str(tiny_vit_folder), runtime="torch") as classifier:
        for photo, prediction in zip(photos[:3], classifier.predict(photos[:3]), strict=True):
            row = rows[f"s3://{BUCKET}/uploads/day1/{photo.name}"]
            assert row["nsfw_score"] == pytest.approx(prediction.nsfw_score, abs=1e-6)
            assert row["size"] == photo.stat().st_size
        video = classifier.predict_video(clip)
    row = rows[clip_uri]
    assert row["sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()
    assert row["nsfw_score"] == pytest.approx(video.nsfw_score, abs=1e-6)
    assert row["timestamp"] == video.timestamp and row["frames_classified"] == 3
    assert summary.errors == {"image_not_an_image": 1}


@pytest.fixture(scope="module")
def ray_session(s3_endpoint: str) -> Iterator[None]:
    """One small local Ray for the module; started after the S3 variables are set so
    its workers inherit them, like workers on a configured cluster."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_actor_pool_options_match_the_installed_ray() -> None:
    import inspect

    import ray.data

    options = scale.actor_pool_options(2)
    parameters = inspect.signature(ray.data.Dataset.map_batches).parameters
    assert set(options) <= set(parameters)
    assert options.get("concurrency") == 2 or options["compute"].size == 2


def test_ray_engine_matches_the_local_engine_on_s3(
    tmp_path: Path, ray_session: None, s3_endpoint: str, tiny_vit_folder: Path
) -> None:
    store = ObjectStoreOptions(endpoint=s3_endpoint)
    options = _options(tiny_vit_folder, store=store, batch_size=2)
    source = [f"s3://{BUCKET}/uploads"]
    scan(source, tmp_path / "local", options)
    # Two half-CPU actors leave room on the two CPUs for Ray's read and write tasks.
    pool = {"engine": "ray", "workers": 2, "cpus_per_worker": 0.5}
    summary = scan(source, tmp_path / "ray", options, **pool)
    local = {row["path"]: row for row in _rows(tmp_path / "local")}
    distributed = {row["path"]: row for row in _rows(tmp_path / "ray")}
    assert set(distributed) == set(local)
    for path, row in local.items():
        assert distributed[path]["error_code"] == row["error_code"]
        if row["nsfw_score"] is not None:
            assert distributed[path]["nsfw_score"] == pytest.approx(row["nsfw_score"], abs=1e-6)
            assert np.allclose(distributed[path]["embedding"], row["embedding"], atol=1e-5)
        for column in ("timestamp", "duration", "frames_classified"):
            assert distributed[path][column] == row[column]
        timeline = [s["start"] for s in row["timeline"] or []]
        assert [s["start"] for s in distributed[path]["timeline"] or []] == timeline
    assert local[f"s3://{BUCKET}/uploads/day2/clip.mp4"]["frames_classified"] == 3
    assert summary.rows == len(local) and summary.errors == {"image_not_an_image": 1}
    again = scan(source, tmp_path / "ray", options, **pool)
    assert again.scanned == 0 and again.skipped == len(local)
