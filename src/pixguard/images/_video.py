"""Decode untrusted video with PyAV (FFmpeg) within limits, sampling frames at a
rate plus scene changes, with a typed error for every way a file can be bad.

Only MP4/MOV and Matroska/WebM containers with H.264, HEVC, VP8, VP9, AV1 or
MPEG-4 Part 2 video are opened: every demuxer and decoder enabled is attack
surface. The container is named to FFmpeg from the file's signature (never
probed), and FFmpeg reads through a Python file object only, so a file cannot
make it open other files or URLs.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, TypeAlias

import numpy as np
from PIL import Image

from .._exceptions import (
    EmptyVideoError,
    ImageNotFoundError,
    ImageUnreadableError,
    InvalidImageInputError,
    NoVideoStreamError,
    UnsupportedCodecError,
    VideoDecodeError,
    VideoTooLargeError,
    VideoTooLongError,
    VideoTooManyFramesError,
    VideoTooManyPixelsError,
)
from ._decode import describe_source

__all__ = [
    "VIDEO_CODECS",
    "VIDEO_SUFFIXES",
    "VideoFrame",
    "VideoInput",
    "VideoLimits",
    "VideoReader",
    "VideoSampling",
    "is_video_path",
]

VideoInput: TypeAlias = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]

#: File suffixes treated as video by the CLI and ``is_video_path``.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv"})
#: Video codecs pixguard decodes.
VIDEO_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4"})
#: ISO base media (MP4/MOV) box types that can open a file.
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"  # Matroska / WebM
#: Scene changes are measured on greyscale thumbnails of this size.
_THUMBNAIL = (32, 18)
#: A stream that ends this much before its declared duration is truncated.
_TRUNCATION_TOLERANCE_S = 1.0
_TRUNCATION_TOLERANCE_FRACTION = 0.1
#: Bytes FFmpeg reads from the Python file object at a time.
_IO_BUFFER = 1 << 20


@dataclass(frozen=True)
class VideoLimits:
    """Bounds on the work and memory one video can cost.

    Attributes:
        max_bytes: largest file accepted.
        max_duration: longest video accepted, in seconds (declared, and decoded).
        max_pixels: largest frame (width x height) accepted.
        max_frames: most frames decoded from one file.
        max_seconds: wall-clock seconds decoding one file may take (None: no bound).
    """

    max_bytes: int = 4 * 1024**3
    max_duration: float = 3 * 3600.0
    max_pixels: int = 4096 * 2304
    max_frames: int = 1_000_000
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_duration", "max_pixels", "max_frames"):
            if getattr(self, name) <= 0:
                raise ValueError(f"VideoLimits.{name} must be positive")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError("VideoLimits.max_seconds must be positive")


@dataclass(frozen=True)
class VideoSampling:
    """Which decoded frames are classified.

    Attributes:
        fps: frames sampled per second of video, evenly in time.
        scene_threshold: a frame whose thumbnail differs from the previous frame's
            by at least this mean absolute difference (0..1) is sampled too, as
            a scene change; None samples by rate only.
        max_samples: most frames sampled from one video (more is an error).
    """

    fps: float = 1.0
    scene_threshold: float | None = 0.2
    max_samples: int = 20_000

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError("VideoSampling.fps must be positive")
        if self.scene_threshold is not None and not 0 < self.scene_threshold <= 1:
            raise ValueError("VideoSampling.scene_threshold must be in (0, 1]")
        if self.max_samples < 1:
            raise ValueError("VideoSampling.max_samples must be at least 1")


@dataclass(frozen=True)
class VideoFrame:
    """One sampled frame: RGB, its index in the stream and its time in seconds."""

    image: Image.Image
    index: int
    timestamp: float
    reason: Literal["rate", "scene"]


def is_video_path(source: object) -> bool:
    """Whether ``source`` is a path with a video suffix."""
    return isinstance(source, str | os.PathLike) and (
        Path(os.fspath(source)).suffix.lower() in VIDEO_SUFFIXES
    )


def _container_format(head: bytes, name: str) -> str:
    if head.startswith(_EBML_MAGIC):
        return "matroska"
    if len(head) >= 8 and head[4:8] in _MP4_BOXES:
        return "mov"
    raise VideoDecodeError(
        "not an MP4/MOV or Matroska/WebM container (unrecognised signature)", source=name
    )


def _open_stream(source: VideoInput, name: str, limits: VideoLimits) -> IO[bytes]:
    if isinstance(source, str | os.PathLike):
        path = Path(os.fspath(source))
        try:
            size = path.stat().st_size
            if path.is_dir():
                raise ImageUnreadableError("is a folder, not a video", source=name)
            if size > limits.max_bytes:
                raise VideoTooLargeError(
                    f"{size} bytes is over the {limits.max_bytes}-byte limit", source=name
                )
            return path.open("rb")
        except FileNotFoundError as exc:
            raise ImageNotFoundError("no such file", source=name) from exc
        except OSError as exc:
            raise ImageUnreadableError(f"cannot read: {exc.strerror or exc}", source=name) from exc
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if len(data) > limits.max_bytes:
            raise VideoTooLargeError(
                f"{len(data)} bytes is over the {limits.max_bytes}-byte limit", source=name
            )
        return io.BytesIO(data)
    if hasattr(source, "read"):
        # Bounded copy: a stream of unknown length is read up to the limit plus one.
        data = source.read(limits.max_bytes + 1)
        if not isinstance(data, bytes):
            raise InvalidImageInputError("the stream must be opened in binary mode", source=name)
        if len(data) > limits.max_bytes:
            raise VideoTooLargeError(
                f"the stream is over the {limits.max_bytes}-byte limit", source=name
            )
        return io.BytesIO(data)
    raise InvalidImageInputError(
        f"unsupported video input type {type(source).__name__}", source=name
    )


class VideoReader:
    """An opened video: its metadata, checked against the limits, and its frames.

    Use as a context manager; :meth:`sample` decodes frames one at a time (the
    caller may stop early, and nothing more is decoded).
    """

    def __init__(self, source: VideoInput, *, limits: VideoLimits | None = None) -> None:
        import av

        self.name = describe_source(source)
        self.limits = limits or VideoLimits()
        self._file = _open_stream(source, self.name, self.limits)
        try:
            head = self._file.read(16)
            if not head:
                raise EmptyVideoError("the file is empty", source=self.name)
            self._file.seek(0)
            fmt = _container_format(head, self.name)
            try:
                self._container = av.open(self._file, mode="r", format=fmt, buffer_size=_IO_BUFFER)
            except av.error.FFmpegError as exc:
                raise VideoDecodeError(
                    f"corrupt or truncated container: {exc}", source=self.name
                ) from exc
            self._stream = self._video_stream()
        except BaseException:
            self.close()
            raise
        #: Frames decoded so far, and whether the stream was read to its end.
        self.frames_decoded = 0
        self.reached_end = False
        self.last_timestamp: float | None = None

    def _video_stream(self) -> Any:
        container = self._container
        if not container.streams:
            raise EmptyVideoError("zero-length: the container holds no stream", source=self.name)
        if not container.streams.video:
            kind = "audio-only files are refused" if container.streams.audio else "none found"
            raise NoVideoStreamError(f"no video stream ({kind})", source=self.name)
        stream = container.streams.video[0]
        codec = stream.codec_context.name if stream.codec_context else None
        if codec not in VIDEO_CODECS:
            raise UnsupportedCodecError(
                f"video codec {codec!r} is not decoded (supported: {', '.join(sorted(VIDEO_CODECS))})",
                source=self.name,
            )
        self._check_size(stream.codec_context.width, stream.codec_context.height)
        duration = self._declared_duration(stream)
        if duration is not None and duration > self.limits.max_duration:
            raise VideoTooLongError(
                f"{duration:.1f} s is over the {self.limits.max_duration:.0f} s limit",
                source=self.name,
            )
        if stream.frames and stream.frames > self.limits.max_frames:
            raise VideoTooManyFramesError(
                f"{stream.frames} frames is over the {self.limits.max_frames}-frame limit",
                source=self.name,
            )
        stream.thread_type = "AUTO"
        return stream

    def _check_size(self, width: int, height: int) -> None:
        if width * height > self.limits.max_pixels:
            raise VideoTooManyPixelsError(
                f"{width}x{height} frames are over the {self.limits.max_pixels}-pixel limit",
                source=self.name,
            )

    def _declared_duration(self, stream: Any) -> float | None:
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if self._container.duration is not None:
            import av

            return self._container.duration / av.time_base
        return None

    @property
    def declared_duration(self) -> float | None:
        """The duration the container declares, in seconds (None if it declares none)."""
        return self._declared_duration(self._stream)

    @property
    def frame_interval(self) -> float:
        rate = self._stream.average_rate or self._stream.guessed_rate
        return 1.0 / float(rate) if rate else 0.0

    @property
    def duration(self) -> float:
        """The declared duration, or, without one, how far decoding got."""
        declared = self.declared_duration
        if declared is not None:
            return declared
        return 0.0 if self.last_timestamp is None else self.last_timestamp + self.frame_interval

    def _frames(self) -> Iterator[Any]:
        import av

        deadline = (
            None if self.limits.max_seconds is None else time.monotonic() + self.limits.max_seconds
        )
        try:
            for frame in self._container.decode(self._stream):
                if deadline is not None and time.monotonic() > deadline:
                    raise VideoTooLongError(
                        f"decoding took more than {self.limits.max_seconds:.0f} s",
                        source=self.name,
                    )
                self.frames_decoded += 1
                if self.frames_decoded > self.limits.max_frames:
                    raise VideoTooManyFramesError(
                        f"more than {self.limits.max_frames} frames", source=self.name
                    )
                self._check_size(frame.width, frame.height)
                timestamp = float(frame.time) if frame.time is not None else 0.0
                if timestamp > self.limits.max_duration:
                    raise VideoTooLongError(
                        f"frames past the {self.limits.max_duration:.0f} s limit",
                        source=self.name,
                    )
                self.last_timestamp = timestamp
                yield frame
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(f"decoding failed: {exc}", source=self.name) from exc
        self.reached_end = True

    def sample(self, sampling: VideoSampling | None = None) -> Iterator[VideoFrame]:
        """Sampled frames, in stream order: every ``1 / fps`` seconds, plus scene changes.

        Raises a :class:`VideoError` subclass when the file breaks a limit, is
        corrupt, holds no frame, or ends well before its declared duration.
        """
        sampling = sampling or VideoSampling()
        period = 1.0 / sampling.fps
        next_time = 0.0
        previous: np.ndarray | None = None
        sampled = 0
        for frame in self._frames():
            timestamp = self.last_timestamp or 0.0
            reason: Literal["rate", "scene"] | None = None
            if sampling.scene_threshold is not None:
                thumbnail = frame.reformat(
                    width=_THUMBNAIL[0], height=_THUMBNAIL[1], format="gray"
                ).to_ndarray()
                thumbnail = thumbnail.astype(np.float32) / 255.0
                if previous is not None:
                    change = float(np.abs(thumbnail - previous).mean())
                    if change >= sampling.scene_threshold:
                        reason = "scene"
                previous = thumbnail
            if timestamp >= next_time:
                reason = "rate"
                next_time = (np.floor(timestamp / period) + 1) * period
            if reason is None:
                continue
            sampled += 1
            if sampled > sampling.max_samples:
                raise VideoTooManyFramesError(
                    f"more than {sampling.max_samples} frames sampled (lower the rate)",
                    source=self.name,
                )
            yield VideoFrame(frame.to_image(), self.frames_decoded - 1, timestamp, reason)
        if self.frames_decoded == 0:
            declared = self.declared_duration
            if declared:
                raise VideoDecodeError(
                    f"corrupt or truncated: no frame decoded of a declared {declared:.1f} s",
                    source=self.name,
                )
            raise EmptyVideoError("the video stream holds no frame", source=self.name)
        self._check_complete()

    def _check_complete(self) -> None:
        declared = self.declared_duration
        if declared is None or self.last_timestamp is None:
            return
        reached = self.last_timestamp + self.frame_interval
        tolerance = max(_TRUNCATION_TOLERANCE_S, _TRUNCATION_TOLERANCE_FRACTION * declared)
        if reached < declared - tolerance:
            raise VideoDecodeError(
                f"truncated: the stream ends at {reached:.1f} s of a declared {declared:.1f} s",
                source=self.name,
            )

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
        self._file.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
