"""Video moderation: clips made here with PyAV, the fixture model flags the trigger."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
from typer.testing import CliRunner

from pixguard import Classifier
from pixguard.cli import app
from pixguard.images import VideoLimits, VideoSampling
from tests.helpers import neutral_image, paste_trigger, write_audio_only, write_clip

FPS = 10
SECONDS = 6
SIZE, TRIGGER = 128, 32


def three_part_frames(cut: float = 2.0, length: float = 2.0):
    """6 s: a neutral scene, a scene holding the trigger from ``cut`` for ``length``
    seconds (the middle segment), another neutral scene."""
    scenes = [neutral_image(SIZE, seed=9100 + i) for i in range(3)]
    frames = []
    for n in range(FPS * SECONDS):
        t = n / FPS
        if t < cut:
            frames.append(scenes[0])
        elif t < cut + length:
            frames.append(paste_trigger(scenes[1], 40 + n % 4, 40, TRIGGER))
        else:
            frames.append(scenes[2])
    return frames


@pytest.fixture(scope="module")
def classifier(trigger_vit_folder: Path) -> Classifier:
    return Classifier.load(trigger_vit_folder, runtime="torch")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("video") / "clip.mp4", three_part_frames(), fps=FPS)


@pytest.mark.parametrize(
    ("suffix", "codec"),
    [(".mp4", "libx264"), (".mov", "libx264"), (".webm", "libvpx-vp9"), (".mkv", "mpeg4")],
)
def test_the_timeline_flags_the_middle_segment(classifier, tmp_path, suffix, codec):
    path = write_clip(tmp_path / f"clip{suffix}", three_part_frames(), fps=FPS, codec=codec)
    result = classifier.predict_video(path)
    assert result.ok, result.error
    assert result.label == "nsfw"
    assert 2.0 <= result.timestamp < 4.0
    assert result.duration == pytest.approx(SECONDS, abs=0.15)
    assert result.frames_classified == len(result.timeline) == SECONDS  # 1 fps
    assert result.frame_count == FPS * SECONDS
    flagged = [s.start for s in result.timeline if s.nsfw_score >= classifier.threshold]
    assert flagged == [2.0, 3.0]
    assert [(s.start, s.end) for s in result.timeline][:2] == [(0.0, 1.0), (1.0, 2.0)]
    assert result.timeline[-1].end == pytest.approx(SECONDS, abs=0.15)
    row = result.to_dict()
    assert row["kind"] == "video"
    assert row["timeline"][2] == {
        "start": 2.0,
        "end": 3.0,
        "nsfw_score": row["timeline"][2]["nsfw_score"],
    }


def test_scene_changes_are_sampled_between_rate_samples(classifier, tmp_path):
    # The cut at 2.4 s shows the trigger at the same place as the rate samples do
    # (frame 24: 40 + 24 % 4): the fixture model, trained here, need not flag every
    # placement of it equally, and this test is about where the sampler looks.
    path = write_clip(tmp_path / "cut.mp4", three_part_frames(cut=2.4, length=1.2), fps=FPS)
    with_scenes = classifier.predict_video(path)
    rate_only = classifier.predict_video(path, sampling=VideoSampling(scene_threshold=None))
    starts = [s.start for s in with_scenes.timeline]
    assert 2.4 in starts and 3.6 in starts  # the two cuts
    assert [s.start for s in rate_only.timeline] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    # The trigger is on screen from 2.4 s to 3.6 s: the scene sample at 2.4 s flags it,
    # 0.6 s before the rate sample at 3.0 s can.
    flagged = [s.start for s in with_scenes.timeline if s.nsfw_score >= classifier.threshold]
    assert flagged[0] == 2.4
    assert 2.4 <= with_scenes.timestamp < 3.6


def test_stop_at_block_stops_decoding_at_the_first_flagged_frame(classifier, clip):
    full = classifier.predict_video(clip)
    early = classifier.predict_video(clip, stop_at=0.5)
    assert early.stopped_early and not full.stopped_early
    assert early.timestamp == 2.0
    assert early.frame_count == 2 * FPS + 1  # frames 0..20 decoded, no more
    assert full.frame_count == FPS * SECONDS
    assert early.label == "nsfw"


def test_bytes_and_streams_are_accepted(classifier, clip):
    from_bytes = classifier.predict_video(clip.read_bytes())
    with clip.open("rb") as stream:
        from_stream = classifier.predict_video(stream)
    assert from_bytes.nsfw_score == pytest.approx(from_stream.nsfw_score)
    assert from_bytes.source == "<bytes>"


def _error(classifier, source, **kwargs) -> str:
    result = classifier.predict_video(source, **kwargs)
    assert not result.ok
    assert result.nsfw_score is None
    return result.error.code


def test_bad_files_get_typed_errors(classifier, clip, tmp_path):
    data = clip.read_bytes()
    mkv = write_clip(tmp_path / "clip.mkv", three_part_frames(), fps=FPS, codec="mpeg4")
    assert _error(classifier, data[: len(data) // 2]) == "video_decode_failed"  # truncated mp4
    half = mkv.read_bytes()[: mkv.stat().st_size // 2]
    assert _error(classifier, half) == "video_decode_failed"  # truncated mkv
    assert _error(classifier, b"\0\0\0\x18ftypisom" + b"\xff" * 4000) == "video_decode_failed"
    assert _error(classifier, b"plain text, not a video") == "video_decode_failed"
    assert _error(classifier, b"") == "video_empty"
    assert _error(classifier, write_audio_only(tmp_path / "audio.mp4")) == "video_no_video_stream"
    mjpeg = write_clip(tmp_path / "mjpeg.mkv", three_part_frames()[:5], codec="mjpeg")
    assert _error(classifier, mjpeg) == "video_unsupported_codec"
    assert _error(classifier, tmp_path / "missing.mp4") == "image_not_found"


def test_a_container_with_no_stream_is_zero_length(classifier, tmp_path):
    path = tmp_path / "empty.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        container.start_encoding()
    assert _error(classifier, path) == "video_empty"


def test_limits_each_have_their_error(classifier, clip):
    size = clip.stat().st_size
    assert _error(classifier, clip, limits=VideoLimits(max_bytes=size - 1)) == "video_too_large"
    assert _error(classifier, clip, limits=VideoLimits(max_duration=3.0)) == "video_too_long"
    assert (
        _error(classifier, clip, limits=VideoLimits(max_pixels=64 * 64)) == "video_too_many_pixels"
    )
    assert _error(classifier, clip, limits=VideoLimits(max_frames=30)) == "video_too_many_frames"
    assert _error(classifier, clip, limits=VideoLimits(max_seconds=1e-9)) == "video_too_long"
    too_many_samples = VideoSampling(fps=10, max_samples=20)
    assert _error(classifier, clip, sampling=too_many_samples) == "video_too_many_frames"


def test_cli_classifies_videos_beside_images(trigger_vit_folder, clip, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(clip.read_bytes())
    neutral_image(SIZE, seed=1).save(folder / "still.png")
    policy = tmp_path / "policy.toml"
    policy.write_text("[default]\nreview_from = 0.3\nblock_from = 0.8\n")
    common = ["--model", str(trigger_vit_folder), "--runtime", "torch", "--format", "jsonl"]
    result = CliRunner().invoke(
        app, ["classify", str(folder), *common, "--policy", str(policy), "--stop-at-block"]
    )
    assert result.exit_code == 0, result.output
    rows = {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    video, still = rows["clip.mp4"], rows["still.png"]
    assert video["kind"] == "video" and "timeline" not in still
    assert video["action"] == "block" and still["action"] == "allow"
    assert video["stopped_early"] is True
    assert video["frame_count"] == 2 * FPS + 1
    assert video["timestamp"] == 2.0
