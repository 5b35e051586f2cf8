"""One safe video loader: limits first, demuxing second, then frames sampled the way Qwen2-VL samples them.

Videos are hostile input like images. The byte size is checked before anything is opened; the
container is recognised from its first bytes and only a few formats are handed to FFmpeg, each by
name, so FFmpeg never probes its other demuxers (HLS and concat playlists would open other files or
URLs); a path is opened by us, never given to FFmpeg as a URL; the number of sampled frames times
their size is checked against a pixel limit before a single frame is decoded; and every PyAV
failure surfaces as a VideoError.

Frame sampling follows transformers 5's `Qwen2VLVideoProcessor.sample_frames`, see
`sample_frame_indices`.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import av
import numpy as np
from PIL import Image

from vislang.errors import ImageError, VislangError
from vislang.processing.image import DEFAULT_MAX_PIXELS, load_image

logger = logging.getLogger(__name__)

DEFAULT_FPS = 2.0
DEFAULT_MIN_FRAMES = 4
DEFAULT_MAX_FRAMES = 768
DEFAULT_MAX_VIDEO_BYTES = 1024 * 1024 * 1024
# Pixels over all sampled frames together: what is held in memory as RGB (3 bytes a pixel, ~2 GB here).
# 768 frames of 720p; a longer or larger video needs a lower fps or a higher limit.
DEFAULT_MAX_VIDEO_PIXELS = 768 * 1280 * 720
# A single frame is held to the image loader's limit.
DEFAULT_MAX_FRAME_PIXELS = DEFAULT_MAX_PIXELS

# Containers we demux, by the FFmpeg demuxer that reads them.
ALLOWED_CONTAINERS = {"mov": "MP4/MOV", "matroska": "Matroska/WebM", "avi": "AVI", "mpegts": "MPEG-TS"}
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")
# Everything PyAV or FFmpeg may raise on a broken file (InvalidDataError is also a ValueError).
_DECODE_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError, IndexError, RuntimeError, MemoryError)

FrameSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray
VideoSource = str | os.PathLike | bytes | bytearray | memoryview | Sequence[FrameSource] | np.ndarray


class VideoError(VislangError, ValueError):
    """A video could not be read: corrupt, truncated, empty, not a video, or of a container we do not open."""


class VideoTooLongError(VideoError):
    """A video with more frames than the frame limit."""


class VideoTooLargeError(VideoError):
    """A video over the byte limit, or whose sampled frames hold more pixels than the pixel limit."""


@dataclass
class Video:
    """Sampled frames of a video.

    `fps` is the rate of the sampled frames (frames kept per second of source), which is what a
    model's temporal position ids need, not the source's frame rate. `duration` is the source's
    length in seconds. `frame_indices` are the decoded-frame indices kept, None for given frames.
    """

    frames: list[Image.Image]
    fps: float
    duration: float
    frame_indices: list[int] | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def seconds_per_grid(self, temporal_patch_size: int = 2) -> float:
        """Seconds of video one temporal patch covers: Qwen2.5-VL's `second_per_grid_ts`."""
        return temporal_patch_size / self.fps


def sample_frame_indices(
    total_frames: int,
    video_fps: float,
    fps: float = DEFAULT_FPS,
    min_frames: int = DEFAULT_MIN_FRAMES,
    max_frames: int = DEFAULT_MAX_FRAMES,
    temporal_patch_size: int = 2,
) -> list[int]:
    """Indices of the frames to keep out of `total_frames` decoded frames, at about `fps` per second.

    The rule of transformers 5's Qwen2VLVideoProcessor.sample_frames: the count is
    total / video_fps * fps (the source duration times fps, not rounded), clamped into
    [min_frames, max_frames] and to the frames there are, then rounded DOWN to a multiple of the
    temporal patch; the frames are spread evenly, frame i being floor(i * total / count).
    (qwen-vl-utils takes the same count but picks round(linspace(0, total - 1, count)).)
    transformers computes the indices with a float-step torch.arange, which for about 4% of counts
    yields one index too many (e.g. 15 of 17 frames where 14 were asked for); we keep the
    count the rule asks for, the indices otherwise agree.
    A video shorter than one temporal patch, where the rule gives zero frames (and transformers
    divides by zero), keeps all its frames; the patchifier pads them.
    """
    if total_frames <= 0:
        return []
    if video_fps <= 0 or fps <= 0:
        raise VideoError(f"frame rates must be positive, got video_fps={video_fps} and fps={fps}")
    cap = math.floor(min(max_frames, total_frames) / temporal_patch_size) * temporal_patch_size
    wanted = min(max(total_frames / video_fps * fps, min_frames), cap, total_frames)
    count = math.floor(wanted / temporal_patch_size) * temporal_patch_size
    if count <= 0:
        return list(range(total_frames))
    return [i * total_frames // count for i in range(count)]


def load_video(
    source: VideoSource,
    fps: float | None = DEFAULT_FPS,
    min_frames: int = DEFAULT_MIN_FRAMES,
    max_frames: int = DEFAULT_MAX_FRAMES,
    *,
    max_bytes: int = DEFAULT_MAX_VIDEO_BYTES,
    max_pixels: int = DEFAULT_MAX_VIDEO_PIXELS,
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
) -> Video:
    """Load a video as RGB frames sampled at about `fps` frames per second.

    `source` is a file path, the file's bytes, or the frames themselves: a list of PIL images,
    HxWx3 uint8 arrays, image paths or image bytes (or one TxHxWx3 array). A file is decoded and
    sampled (see `sample_frame_indices`; `fps=None` keeps every frame, then more than `max_frames`
    raises VideoTooLongError). Given frames are kept as they are, taken to be sampled at `fps`
    (2 if None, as qwen-vl-utils assumes), and more than `max_frames` of them raise
    VideoTooLongError. Over `max_bytes`, or when the kept frames hold more than `max_pixels` pixels
    in all (or one frame more than `max_frame_pixels`), VideoTooLargeError is raised before decoding.
    """
    if isinstance(source, np.ndarray) and source.ndim == 4:
        source = list(source)
    if isinstance(source, (list, tuple)):
        return _from_frames(source, fps, max_frames, max_pixels, max_frame_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_bytes(len(data), max_bytes)

        def opener() -> BinaryIO:
            return io.BytesIO(data)

        what = f"video bytes ({len(data)} bytes)"
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            size = os.stat(path).st_size
        except OSError as e:
            raise VideoError(f"cannot read video file {path!r}: {e.strerror or e}") from e
        if not os.path.isfile(path):
            raise VideoError(f"{path!r} is not a regular file")
        _check_bytes(size, max_bytes)

        def opener() -> BinaryIO:
            # Our own file object: FFmpeg never sees the string, so it cannot read it as a URL or protocol.
            return open(path, "rb")  # noqa: SIM115 - closed by _Decoder

        what = f"video file {path!r}"
    else:
        raise VideoError(
            f"cannot load a video from a {type(source).__name__}; pass a path, bytes or a list of frames"
        )
    sampling = dict(fps=fps, min_frames=min_frames, max_frames=max_frames)
    limits = dict(max_pixels=max_pixels, max_frame_pixels=max_frame_pixels)
    return _decode_file(opener, what, sampling, limits)


def _check_bytes(num_bytes: int, max_bytes: int) -> None:
    if num_bytes > max_bytes:
        raise VideoTooLargeError(f"video is {num_bytes} bytes, over the limit of {max_bytes} bytes")


def _check_frame_count(count: int, max_frames: int, what: str) -> None:
    if count > max_frames:
        raise VideoTooLongError(
            f"{what} has {count} frames, over the limit of {max_frames} frames; "
            "sample at a lower fps or raise max_frames"
        )


def _check_pixels(frames: int, width: int, height: int, max_pixels: int, max_frame_pixels: int) -> None:
    if width * height > max_frame_pixels:
        raise VideoTooLargeError(
            f"video frames are {width}x{height} = {width * height} pixels, "
            f"over the limit of {max_frame_pixels} pixels a frame"
        )
    if frames * width * height > max_pixels:
        raise VideoTooLargeError(
            f"video is {frames} frames of {width}x{height} = {frames * width * height} pixels, "
            f"over the limit of {max_pixels} pixels; sample at a lower fps or raise max_pixels"
        )


def _from_frames(
    frames: Sequence[FrameSource], fps: float | None, max_frames: int, max_pixels: int, max_frame_pixels: int
) -> Video:
    if not frames:
        raise VideoError("video has no frames: the list of frames is empty")
    _check_frame_count(len(frames), max_frames, "the list of frames")
    images, pixels = [], 0
    for i, frame in enumerate(frames):
        try:
            image = load_image(frame, max_pixels=max_frame_pixels)
        except ImageError as e:
            raise type(e)(f"frame {i} of the video: {e}") from e
        pixels += image.width * image.height
        if pixels > max_pixels:
            raise VideoTooLargeError(
                f"the first {i + 1} of {len(frames)} frames hold {pixels} pixels, "
                f"over the limit of {max_pixels} pixels; pass fewer or smaller frames or raise max_pixels"
            )
        images.append(image)
    rate = fps if fps else DEFAULT_FPS
    return Video(frames=images, fps=rate, duration=len(images) / rate)


def _container_format(head: bytes) -> str | None:
    """The FFmpeg demuxer for a file that starts with `head`, or None when it is none we allow."""
    if len(head) >= 8 and head[4:8] in _MP4_BOXES:
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpegts"
    return None


class _Decoder:
    """One open container: its first video stream's frame count and rate, and a sampled decode."""

    def __init__(self, opener: Callable[[], BinaryIO], container_format: str, what: str) -> None:
        self.what = what
        self.file = opener()
        try:
            self.container = av.open(self.file, mode="r", format=container_format)
        except BaseException:
            self.file.close()
            raise
        if not self.container.streams.video:
            self.close()
            raise VideoError(f"{what} has no video stream")
        self.stream = self.container.streams.video[0]

    def close(self) -> None:
        self.container.close()
        self.file.close()

    def __enter__(self) -> _Decoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def frame_rate(self) -> float:
        for rate in (self.stream.average_rate, self.stream.guessed_rate, self.stream.base_rate):
            if rate:
                return float(rate)
        raise VideoError(f"{self.what} does not state its frame rate")

    def count_packets(self) -> int:
        """Frames in the stream by its packets, without decoding: for containers with no frame count."""
        return sum(1 for packet in self.container.demux(self.stream) if packet.size)

    def decode(self, indices: list[int]) -> tuple[list[Image.Image], int]:
        """The frames at sorted `indices` and how many frames were decoded (all, if some are missing)."""
        self.stream.thread_type = "AUTO"
        kept: list[Image.Image] = []
        decoded = 0
        for frame in self.container.decode(self.stream):
            if decoded == indices[len(kept)]:
                kept.append(frame.to_image())
                if len(kept) == len(indices):
                    return kept, decoded + 1
            decoded += 1
        return kept, decoded


def _decode_file(opener: Callable[[], BinaryIO], what: str, sampling: dict, limits: dict) -> Video:
    with opener() as f:
        head = f.read(192)
    container_format = _container_format(head)
    if container_format is None:
        allowed = ", ".join(ALLOWED_CONTAINERS.values())
        raise VideoError(f"{what} is not a video in an allowed container ({allowed})")
    try:
        with _Decoder(opener, container_format, what) as decoder:
            video_fps = decoder.frame_rate()
            width, height = decoder.stream.width, decoder.stream.height
            total = decoder.stream.frames
        if total <= 0:  # Matroska and MPEG-TS do not record it
            with _Decoder(opener, container_format, what) as decoder:
                total = decoder.count_packets()
        indices = _sample(total, video_fps, what, **sampling)
        _check_pixels(len(indices), width, height, **limits)
        with _Decoder(opener, container_format, what) as decoder:
            frames, decoded = decoder.decode(indices)
        if len(frames) < len(indices) and decoded > 0:
            # Fewer frames decode than the header promised (a truncated file): sample those that exist.
            logger.warning(
                "%s: %d frames stated, %d decoded; sampling the decoded ones", what, total, decoded
            )
            total = decoded
            indices = _sample(total, video_fps, what, **sampling)
            with _Decoder(opener, container_format, what) as decoder:
                frames, decoded = decoder.decode(indices)
    except VideoError:
        raise
    except _DECODE_ERRORS as e:
        # PyAV's own message names a '<none>' file for streams; FFmpeg's reason alone reads better.
        reason = getattr(e, "strerror", None) or e
        raise VideoError(f"{what} is corrupt or truncated: {reason}") from e
    if not frames or len(frames) < len(indices):
        raise VideoError(f"{what} is corrupt or truncated: no frames could be decoded")
    return Video(
        frames=frames,
        fps=len(indices) / total * video_fps,
        duration=total / video_fps,
        frame_indices=indices,
    )


def _sample(
    total: int, video_fps: float, what: str, fps: float | None, min_frames: int, max_frames: int
) -> list[int]:
    if total <= 0:
        raise VideoError(f"{what} is corrupt or truncated: it holds no video frames")
    if fps is None:
        _check_frame_count(total, max_frames, what)
        return list(range(total))
    return sample_frame_indices(total, video_fps, fps, min_frames, max_frames)
