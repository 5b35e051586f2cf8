"""Qwen2-VL preprocessing against transformers: smart_resize, image patches, video sampling and loading."""

from __future__ import annotations

import ast
import io
import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch
import transformers.models.qwen2_vl as hf_qwen2_vl
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

from vislang.errors import ImageError
from vislang.processing.qwen2vl import (
    VIDEO_MAX_PIXELS,
    VIDEO_MIN_PIXELS,
    AspectRatioError,
    QwenImageTransform,
    num_tokens,
    smart_resize,
)
from vislang.processing.video import (
    Video,
    VideoError,
    VideoTooLargeError,
    VideoTooLongError,
    load_video,
    sample_frame_indices,
)


def _image(height: int, width: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    channels = 4 if mode == "RGBA" else 3
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels)


def _write_video(
    path: Path, frames: int = 30, rate: int = 10, fmt: str = "mp4", codec: str = "mpeg4"
) -> Path:
    """A 64x48 clip: frame i is grey level 8*i with a white square moving right 2 pixels a frame."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv444p" if codec == "ffv1" else "yuv420p"
        for i in range(frames):
            pixels = np.full((48, 64, 3), 8 * i, dtype=np.uint8)
            pixels[10:20, 2 * i : 2 * i + 10] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _grey_index(frame: Image.Image) -> int:
    """Which frame of _write_video this is, from the grey level below the square."""
    return round(float(np.asarray(frame)[30:, :, 1].mean()) / 8)


def _hf_video_method(name: str):
    """A method of transformers' Qwen2VLVideoProcessor, lifted from its source.

    That module imports torchvision, which is not installed here; the methods we compare against
    use only math and torch, so their source is compiled on its own.
    """
    source = (Path(hf_qwen2_vl.__file__).parent / "video_processing_qwen2_vl.py").read_text()
    cls = next(n for n in ast.parse(source).body if getattr(n, "name", "") == "Qwen2VLVideoProcessor")
    method = next(n for n in cls.body if getattr(n, "name", "") == name)
    # annotations left unevaluated: they name transformers types we do not import
    code = compile(
        "from __future__ import annotations\n" + ast.unparse(method), "video_processing_qwen2_vl.py", "exec"
    )
    namespace = {"math": math, "torch": torch}
    exec(code, namespace)
    return namespace[name]


# --- smart_resize ---------------------------------------------------------------------------------

SIZES = [(28, 28), (1, 1), (7, 9), (100, 37), (333, 500), (480, 640), (1080, 1920), (4000, 3000), (27, 29)]
SIZES += [(14, 14), (42, 42), (70, 98), (1, 200), (200, 1), (3, 599), (10000, 50), (56, 5600), (8192, 8192)]
BOUNDS = [(56 * 56, 28 * 28 * 1280), (3136, 12845056), (VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS), (1, 28 * 28)]


def test_smart_resize_matches_transformers():
    rng = random.Random(0)
    sizes = SIZES + [(rng.randint(1, 3000), rng.randint(1, 3000)) for _ in range(2000)]
    for height, width in sizes:
        for factor in (28, 32):
            for low, high in BOUNDS:
                try:
                    expected = hf_smart_resize(height, width, factor, low, high)
                except ValueError:  # aspect ratio over 200
                    with pytest.raises(AspectRatioError):
                        smart_resize(height, width, factor, low, high)
                    continue
                assert smart_resize(height, width, factor, low, high) == expected, (height, width, factor)
    # halves round to even, as Python's round does: 42 / 28 = 1.5 -> 56, 70 / 28 = 2.5 -> 56
    assert smart_resize(42, 70) == hf_smart_resize(42, 70) == (56, 56)


def test_smart_resize_refuses_extreme_aspect_ratios():
    assert smart_resize(1, 200) == hf_smart_resize(1, 200)
    with pytest.raises(ValueError):
        hf_smart_resize(2, 403)
    with pytest.raises(AspectRatioError, match=r"201\.5.*200") as error:
        smart_resize(2, 403)
    assert isinstance(error.value, ImageError) and isinstance(error.value, ValueError)
    with pytest.raises(AspectRatioError, match="200"):
        QwenImageTransform().images([_image(1, 300)])


# --- images ---------------------------------------------------------------------------------------

IMAGES = [_image(100, 37, 1), _image(333, 500, 2), _image(480, 640, 3), _image(28, 28, 4), _image(7, 9, 5)]
IMAGES.append(_image(40, 61, 6, mode="RGBA"))

QWEN_CONFIGS = [
    {},
    {"min_pixels": 28 * 28 * 100, "max_pixels": 28 * 28 * 300},  # every image hits a bound
    {"max_pixels": 28 * 28 * 4},  # all shrink to a few patches
    {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2},
    {"do_normalize": False},
    {"do_rescale": False},
]


@pytest.mark.parametrize("config", QWEN_CONFIGS, ids=lambda c: ",".join(c) or "default")
def test_images_bit_identical_to_transformers(config: dict):
    reference = Qwen2VLImageProcessorPil(**config)
    transform = QwenImageTransform.from_dict(json.loads(reference.to_json_string()))
    expected = reference(IMAGES, return_tensors="pt")
    actual = transform.images(IMAGES)
    assert actual["pixel_values"].dtype == torch.float32 and actual["image_grid_thw"].dtype == torch.long
    assert torch.equal(actual["image_grid_thw"], expected.image_grid_thw)
    assert torch.equal(actual["pixel_values"], expected.pixel_values)


def test_images_per_call_pixel_bounds():
    reference, transform = Qwen2VLImageProcessorPil(), QwenImageTransform()
    for low, high in [(28 * 28 * 4, 28 * 28 * 16), (28 * 28 * 400, 28 * 28 * 2000)]:
        size = {"shortest_edge": low, "longest_edge": high}
        expected = reference(IMAGES, size=size, return_tensors="pt")
        actual = transform.images(IMAGES, min_pixels=low, max_pixels=high)
        assert torch.equal(actual["image_grid_thw"], expected.image_grid_thw)
        assert torch.equal(actual["pixel_values"], expected.pixel_values)
    # one bound given: the other stays the config's
    few = transform.images([IMAGES[2]], max_pixels=28 * 28 * 16)["image_grid_thw"]
    assert few.tolist() == [[1, 6, 8]] and transform.images([IMAGES[2]])["image_grid_thw"].tolist() == [
        [1, 34, 46]
    ]


def test_config_round_trips_through_transformers(tmp_path: Path):
    reference = Qwen2VLImageProcessorPil(
        min_pixels=28 * 28 * 8, max_pixels=28 * 28 * 64, image_mean=[0.5] * 3
    )
    reference.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    transform = QwenImageTransform.from_dict(config)
    assert (transform.min_pixels, transform.max_pixels) == (28 * 28 * 8, 28 * 28 * 64)
    assert transform.to_dict() == config
    expected = reference(IMAGES, return_tensors="pt").pixel_values
    assert torch.equal(transform.images(IMAGES)["pixel_values"], expected)
    # what we write, transformers reads back to the same processor
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "preprocessor_config.json").write_text(json.dumps(transform.to_dict()))
    reread = Qwen2VLImageProcessorPil.from_pretrained(tmp_path / "ours")
    assert torch.equal(reread(IMAGES, return_tensors="pt").pixel_values, expected)


def test_qwen_style_config_round_trips():
    # the shape of the config in Qwen's own checkpoints: pixel bounds as top-level keys, no size
    config = {
        "min_pixels": 3136,
        "max_pixels": 12845056,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
    }
    transform = QwenImageTransform.from_dict(config)
    written = transform.to_dict()
    assert {k: written[k] for k in config} == config and "size" not in written
    assert QwenImageTransform.from_dict(transform.to_dict()) == transform
    reference = Qwen2VLImageProcessorPil.from_dict(transform.to_dict())
    assert reference.size == {"shortest_edge": 3136, "longest_edge": 12845056}
    size_only = QwenImageTransform.from_dict({"size": {"shortest_edge": 10, "longest_edge": 20}})
    assert (size_only.min_pixels, size_only.max_pixels) == (10, 20)
    video = QwenImageTransform.from_dict({}, video=True)
    assert (video.min_pixels, video.max_pixels) == (VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS) == (100352, 602112)


def test_num_tokens_matches_patch_count():
    reference, transform = Qwen2VLImageProcessorPil(), QwenImageTransform()
    out = transform.images(IMAGES)
    counts = transform.num_tokens(out["image_grid_thw"])
    assert counts == [reference.get_number_of_image_patches(i.height, i.width) // 4 for i in IMAGES]
    assert sum(counts) * 4 == out["pixel_values"].shape[0]
    assert num_tokens((3, 4, 6)) == 18 and num_tokens([[1, 4, 4], [2, 8, 8]], merge_size=2) == [4, 32]


# --- video patches --------------------------------------------------------------------------------


def test_video_patches_match_transformers_video_processor():
    hf_patchify = _hf_video_method("patchify")
    frames = [_image(56, 84, seed) for seed in range(3)]  # odd count: the last frame is repeated
    transform = QwenImageTransform(do_resize=False, do_rescale=False, do_normalize=False)
    actual = transform.videos([frames])
    stacked = torch.from_numpy(np.stack([np.asarray(f) for f in frames])).permute(0, 3, 1, 2).float()
    expected, grid_t, grid_h, grid_w = hf_patchify(None, stacked[None], 14, 2, 2)
    assert actual["video_grid_thw"].tolist() == [[grid_t, grid_h, grid_w]] == [[2, 4, 6]]
    assert torch.equal(actual["pixel_values_videos"], expected[0])
    assert "second_per_grid_ts" not in actual
    # the padding: both temporal halves of every second-step patch are the last frame
    rows = actual["pixel_values_videos"][24:].view(24, 3, 2, 14 * 14)
    assert torch.equal(rows[:, :, 0], rows[:, :, 1])


def test_still_image_as_video_equals_image():
    transform = QwenImageTransform()
    for image in (IMAGES[1], IMAGES[4]):
        as_image = transform.images([image])
        for frames in ([image, image], [image]):
            as_video = transform.videos([frames])
            assert torch.equal(as_video["pixel_values_videos"], as_image["pixel_values"])
            assert torch.equal(as_video["video_grid_thw"], as_image["image_grid_thw"])
    video = transform.videos([Video(frames=[IMAGES[1]] * 2, fps=2.0, duration=1.0)], max_pixels=28 * 28 * 8)
    assert torch.equal(
        video["pixel_values_videos"], transform.images([IMAGES[1]], max_pixels=28 * 28 * 8)["pixel_values"]
    )
    assert video["second_per_grid_ts"].tolist() == [1.0]


def test_video_frames_share_the_first_frames_size():
    transform = QwenImageTransform()
    out = transform.videos(
        [[_image(100, 200), _image(300, 300), _image(50, 50)], [_image(28, 28)]], fps=[1.0, 4.0]
    )
    assert out["video_grid_thw"].tolist() == [[2, 8, 14], [1, 4, 4]]  # 100x200 -> 112x196
    assert out["second_per_grid_ts"].tolist() == [2.0, 0.5]
    with pytest.raises(VideoError):
        transform.videos([])


# --- frame sampling -------------------------------------------------------------------------------


def test_sample_frame_indices_follow_transformers():
    hf_sample = _hf_video_method("sample_frames")
    processor = SimpleNamespace(
        num_frames=None, fps=None, temporal_patch_size=2, min_frames=4, max_frames=768
    )
    for total in [2, 3, 4, 5, 9, 17, 30, 61, 90, 100, 299, 900, 1801, 20000]:
        for video_fps in [5, 10, 24, 29.97, 30, 60]:
            for fps in [0.5, 1, 2, 4]:
                ours = sample_frame_indices(total, video_fps, fps)
                metadata = SimpleNamespace(total_num_frames=total, fps=video_fps)
                theirs = hf_sample(processor, metadata, fps=fps).tolist()
                assert (len(ours) % 2 == 0 and 4 <= len(ours) <= 768) or len(ours) == total - total % 2
                # transformers' float-step arange sometimes yields one index more; the rest agree
                assert theirs[: len(ours)] == ours and len(theirs) - len(ours) in (0, 1), (
                    total,
                    video_fps,
                    fps,
                )
    assert sample_frame_indices(1, 30.0) == [0]  # shorter than one temporal patch: the frame is kept


# --- load_video -----------------------------------------------------------------------------------


def test_load_video_file_samples_at_fps(tmp_path: Path):
    path = _write_video(tmp_path / "clip.mp4")  # 3 s at 10 fps
    video = load_video(path, fps=2.0)
    assert len(video) == 6 and video.frame_indices == [0, 5, 10, 15, 20, 25]
    assert video.fps == 2.0 and video.duration == 3.0 and video.seconds_per_grid() == 1.0
    assert all(f.mode == "RGB" and f.size == (64, 48) for f in video.frames)
    assert [_grey_index(f) for f in video.frames] == video.frame_indices
    square = np.asarray(video.frames[3])[15, :, 0] > 200  # frame 15: the square spans x 30..39
    assert square[32:38].all() and not square[:26].any() and not square[44:].any()
    from_bytes = load_video(path.read_bytes(), fps=2.0)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(from_bytes.frames, video.frames))
    out = QwenImageTransform().videos([video])
    assert out["video_grid_thw"].tolist() == [[3, 4, 4]] and out["second_per_grid_ts"].tolist() == [1.0]
    assert out["pixel_values_videos"].shape == (48, 3 * 2 * 14 * 14)


def test_load_video_frame_counts(tmp_path: Path):
    # Matroska records no frame count: the packets are counted; ffv1 is lossless, so grey levels are exact
    mkv = _write_video(tmp_path / "clip.mkv", fmt="matroska", codec="ffv1")
    assert load_video(mkv, fps=1.0).frame_indices == [0, 7, 15, 22]  # 3 frames by rate, min_frames 4
    assert [_grey_index(f) for f in load_video(mkv, fps=4.0).frames] == [i * 30 // 12 for i in range(12)]
    assert len(load_video(mkv, fps=None)) == 30
    short = _write_video(tmp_path / "short.mp4", frames=3)
    video = load_video(short)
    assert video.frame_indices == [0, 1]  # floored to the temporal patch
    assert QwenImageTransform().videos([load_video(short, fps=None)])["video_grid_thw"].tolist() == [
        [2, 4, 4]
    ]


def test_load_video_from_frames(tmp_path: Path):
    png = io.BytesIO()
    _image(48, 64, 1).save(png, format="PNG")
    _image(48, 64, 2).save(tmp_path / "frame.png")
    array = np.asarray(_image(48, 64, 3))
    video = load_video(
        [_image(48, 64, 0), png.getvalue(), tmp_path / "frame.png", array, _image(48, 64, 4, "RGBA")]
    )
    assert len(video) == 5 and all(f.mode == "RGB" for f in video.frames)
    assert video.fps == 2.0 and video.duration == 2.5 and video.frame_indices is None
    assert np.array_equal(np.asarray(video.frames[3]), array)
    assert load_video(np.stack([array] * 4), fps=4.0).seconds_per_grid() == 0.5
    out = QwenImageTransform().videos([video])
    assert out["video_grid_thw"].tolist() == [[3, 4, 4]]  # 5 frames padded to 6


def test_load_video_limits(tmp_path: Path):
    with pytest.raises(VideoTooLongError, match="limit of 4 frames"):
        load_video([_image(8, 8)] * 5, max_frames=4)
    path = _write_video(tmp_path / "clip.mp4")
    with pytest.raises(VideoTooLongError, match="limit of 16 frames"):
        load_video(path, fps=None, max_frames=16)
    with pytest.raises(VideoTooLargeError, match="limit of 1000 bytes"):
        load_video(path, max_bytes=1000)
    with pytest.raises(VideoTooLargeError, match="limit of 10000 pixels"):
        load_video(path, max_pixels=10_000)
    with pytest.raises(VideoTooLargeError, match="limit of 10000 pixels"):
        load_video([_image(48, 64)] * 4, max_pixels=10_000)


def test_load_video_refuses_broken_input(tmp_path: Path):
    data = _write_video(tmp_path / "clip.mp4").read_bytes()
    broken = {
        "random bytes": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "truncated mp4": data[: len(data) // 2],
        "mp4 header, garbage after": data[:32] + bytes(2000),
        "empty": b"",
    }
    for payload in broken.values():
        with pytest.raises(VideoError, match="not a video|corrupt or truncated"):
            load_video(payload)
        (tmp_path / "broken.mp4").write_bytes(payload)
        with pytest.raises(VideoError, match="broken.mp4"):
            load_video(tmp_path / "broken.mp4")
    with pytest.raises(VideoError, match="empty"):
        load_video([])
    with pytest.raises(VideoError, match="cannot read"):
        load_video(tmp_path / "missing.mp4")
    with pytest.raises(VideoError, match="not a regular file"):
        load_video(tmp_path)
    with pytest.raises(ImageError, match="frame 1"):
        load_video([_image(8, 8), b"not an image"])
