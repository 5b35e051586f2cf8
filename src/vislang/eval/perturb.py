"""Image-level shifts of the robustness suite: the world's images degraded, the scenes left as they are.

A transform is f(image, level, rng, sample) -> image of the same size; `level` is the shift's setting
at one severity (a JPEG quality, a blur sigma, ...). ImageShift.make draws the clean sample and
transforms every image of it (all frames of a video, both images of a pair) with one random stream
per (sample, severity), so the answer stays exact and the same arguments give the same pixels.

Two shifts need care to keep answers exact:
  occluder   a grey rectangle is placed clear of every box the sample records (objects, signs, text,
             widgets, bars; all frames of a video, both images of a pair), at the same place on
             every image; samples with no room at all are skipped.
  grayscale  colour is gone, so every question whose answer is a colour, needs colour to be found
             (count by colour, same colour, a caption, a change that may be a recolouring) or whose
             wording names a colour ("Where is the red circle?": world-spec v2 refers to objects by
             colour) is skipped: ambiguous references would make the answer a guess.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from vislang.data.world import Sample, generate_sample
from vislang.data.world import palette as P

from .shift import Shift

Box = list[int]
Transform = Callable[[Image.Image, object, np.random.Generator, Sample], Image.Image]


# ---- pure transforms ------------------------------------------------------------------------------


def downscale(image: Image.Image, factor: float, rng: np.random.Generator, sample: Sample) -> Image.Image:
    """Shrink by `factor` (area averaging, as a low-resolution camera records), then enlarge back
    (bicubic, as a model's preprocessing would): the detail lost below the small size stays lost."""
    if not 0 < factor <= 1:
        raise ValueError(f"a downscale factor is in (0, 1], got {factor}")
    if factor == 1:
        return image.copy()
    small = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(small, Image.Resampling.BOX).resize(image.size, Image.Resampling.BICUBIC)


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality is in 1..100, got {quality}")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def jpeg(image: Image.Image, quality: int | None, rng: np.random.Generator, sample: Sample) -> Image.Image:
    """Encode as JPEG at `quality` and decode again; None leaves the image untouched."""
    if quality is None:
        return image.copy()
    return Image.open(io.BytesIO(jpeg_bytes(image, quality))).convert(image.mode)


def blur(image: Image.Image, sigma: float, rng: np.random.Generator, sample: Sample) -> Image.Image:
    """Gaussian blur with standard deviation `sigma` pixels."""
    if sigma < 0:
        raise ValueError(f"a blur sigma is >= 0, got {sigma}")
    return image.copy() if sigma == 0 else image.filter(ImageFilter.GaussianBlur(sigma))


def noise(image: Image.Image, std: float, rng: np.random.Generator, sample: Sample) -> Image.Image:
    """Independent gaussian noise of standard deviation `std` (0..255 units) on every channel, clipped."""
    if std < 0:
        raise ValueError(f"a noise std is >= 0, got {std}")
    if std == 0:
        return image.copy()
    pixels = np.asarray(image, dtype=np.float64)
    noisy = np.clip(np.rint(pixels + rng.normal(0.0, std, pixels.shape)), 0, 255)
    return Image.fromarray(noisy.astype(np.uint8), image.mode)


def brightness(image: Image.Image, factor: float, rng: np.random.Generator, sample: Sample) -> Image.Image:
    """Darken: every channel times `factor` (an underexposed photograph keeps its hues)."""
    if not 0 <= factor <= 1:
        raise ValueError(f"a brightness factor is in [0, 1], got {factor}")
    return ImageEnhance.Brightness(image).enhance(factor)


def contrast(image: Image.Image, factor: float, rng: np.random.Generator, sample: Sample) -> Image.Image:
    """Pull every pixel towards the image's mean grey by 1 - `factor` (a washed-out, hazy look)."""
    if not 0 <= factor <= 1:
        raise ValueError(f"a contrast factor is in [0, 1], got {factor}")
    return ImageEnhance.Contrast(image).enhance(factor)


def grayscale(image: Image.Image, amount: float, rng: np.random.Generator, sample: Sample) -> Image.Image:
    """Blend towards the image's luma by `amount`: 1 leaves R == G == B everywhere."""
    if not 0 <= amount <= 1:
        raise ValueError(f"a desaturation amount is in [0, 1], got {amount}")
    gray = image.convert("L").convert(image.mode)
    return Image.blend(image, gray, amount)


# ---- the occluder ---------------------------------------------------------------------------------

OCCLUDER_FILL = (128, 128, 128)  # a grey no object, sign or widget is drawn in: nothing to count or read
MARGIN = 2  # pixels kept free around every box: a shape's faint anti-aliased edge lies just outside it
ASPECTS = 8  # aspect ratios tried at the full area before falling back to the largest free spot
MAX_ASPECT = 2.0  # width / height between 1/2 and 2
CONTAINERS = frozenset({"window_box", "title_bar_box"})  # boxes around other boxes, not content
BOX_KEYS = re.compile(r"^(box|boxes|.*_box)$")


def meta_boxes(node: object, key: str = "") -> Iterator[Box]:
    """Every box recorded in a sample's meta: values of keys "box", "boxes" or "*_box", at any depth."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k not in CONTAINERS:
                yield from meta_boxes(v, k)
    elif isinstance(node, (list, tuple)):
        if BOX_KEYS.match(key) and len(node) == 4 and all(isinstance(v, (int, float)) for v in node):
            yield [int(v) for v in node]
        else:
            for v in node:
                yield from meta_boxes(v, key)


def protected_boxes(sample: Sample) -> list[Box]:
    """What the occluder must not touch. With nothing recorded (the real families, drawn on black),
    everything that is not black on any image counts as content."""
    boxes = [list(o["box"]) for o in sample.objects] + list(meta_boxes(sample.meta))
    if not boxes:
        boxes = [list(b) for image in sample.images if (b := image.convert("L").getbbox()) is not None]
    return boxes


def occupancy(sample: Sample) -> np.ndarray:
    """A [H, W] mask of the protected pixels, each box widened by MARGIN."""
    mask = np.zeros((sample.height, sample.width), dtype=bool)
    for x1, y1, x2, y2 in protected_boxes(sample):
        mask[max(0, y1 - MARGIN) : max(0, y2 + MARGIN), max(0, x1 - MARGIN) : max(0, x2 + MARGIN)] = True
    return mask


def free_corners(mask: np.ndarray, w: int, h: int) -> np.ndarray:
    """[k, 2] (y, x) top-left corners where a w x h rectangle touches no protected pixel."""
    H, W = mask.shape
    if w > W or h > H:
        return np.zeros((0, 2), dtype=int)
    s = np.zeros((H + 1, W + 1), dtype=np.int64)  # summed-area table: any window's count in O(1)
    s[1:, 1:] = mask.cumsum(0).cumsum(1)
    taken = s[h:, w:] - s[:-h, w:] - s[h:, :-w] + s[:-h, :-w]
    return np.argwhere(taken == 0)


def largest_free(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x, y, w, h) of a largest all-free rectangle: per row, the free run above every column is a
    histogram, and a stack finds the histogram's largest rectangle in one pass."""
    H, W = mask.shape
    heights = np.zeros(W, dtype=int)
    best = (0, 0, 0, 0)
    for y in range(H):
        heights = np.where(mask[y], 0, heights + 1)
        bars = heights.tolist() + [0]  # the zero at the end empties the stack
        stack: list[int] = []
        for x, bar in enumerate(bars):
            while stack and bars[stack[-1]] >= bar:
                top = bars[stack.pop()]
                left = stack[-1] + 1 if stack else 0
                if top * (x - left) > best[2] * best[3]:
                    best = (left, y - top + 1, x - left, top)
            stack.append(x)
    return best


def place_occluder(sample: Sample, fraction: float, rng: np.random.Generator) -> Box | None:
    """A [x1, y1, x2, y2] rectangle of `fraction` of the canvas clear of every protected box, at a
    seeded random place and aspect. Where no such rectangle fits, the largest free spot (capped at
    the asked area) instead; None when no pixel is free."""
    if not 0 <= fraction < 1:
        raise ValueError(f"an occluder covers a fraction in [0, 1) of the canvas, got {fraction}")
    if fraction == 0:
        return None
    mask, W, H = occupancy(sample), sample.width, sample.height
    area = fraction * W * H
    for aspect in np.exp(rng.uniform(-math.log(MAX_ASPECT), math.log(MAX_ASPECT), ASPECTS)):
        h = max(1, round(math.sqrt(area / aspect)))
        w = max(1, round(area / h))
        corners = free_corners(mask, w, h)
        if len(corners):
            y, x = corners[int(rng.integers(len(corners)))]
            return [int(x), int(y), int(x) + w, int(y) + h]
    x, y, w, h = largest_free(mask)
    if w * h == 0:
        return None
    if w * h > area:  # trim to the asked area, keeping as square a shape as the spot allows
        h2 = min(h, max(1, round(math.sqrt(area))))
        w2 = min(w, max(1, round(area / h2)))
        h2 = min(h, max(1, round(area / w2)))
        x += int(rng.integers(w - w2 + 1))
        y += int(rng.integers(h - h2 + 1))
        w, h = w2, h2
    return [x, y, x + w, y + h]


def paint(image: Image.Image, box: Box) -> Image.Image:
    out = image.copy()
    fill = OCCLUDER_FILL if out.mode == "RGB" else OCCLUDER_FILL[0]
    out.paste(fill, tuple(box))
    return out


def occluder(image: Image.Image, fraction: float, rng: np.random.Generator, sample: Sample) -> Image.Image:
    """A grey rectangle over `fraction` of the canvas, clear of every object (see place_occluder)."""
    box = place_occluder(sample, fraction, rng)
    return image.copy() if box is None else paint(image, box)


# ---- shifts ---------------------------------------------------------------------------------------

COLOR_WORDS = re.compile(r"\b(" + "|".join([*P.COLORS, "colou?r"]) + r")s?\b", re.IGNORECASE)
# answers that are colours, need colour to find (count by colour, exist, more, same colour), name
# colours (caption; multi's change: "a red circle was added", and a recolouring is invisible)
COLOR_QTYPES = frozenset(
    {"color", "count_color", "count_both", "exist", "more", "same_color", "caption", "change"}
)


def names_a_color(sample: Sample) -> bool:
    texts = [sample.question] + [p["question"] for p in sample.probes]
    return any(COLOR_WORDS.search(t) for t in texts)


@dataclasses.dataclass(frozen=True)
class ImageShift(Shift):
    transform: Transform | None = None
    drops_color: bool = False  # skip samples whose question or probes name a colour

    def __post_init__(self):
        super().__post_init__()
        if self.transform is None:
            raise ValueError(f"image shift {self.name!r} needs a transform")

    def answerable(self, sample: Sample) -> bool:
        return sample.qtype not in self.excludes and not (self.drops_color and names_a_color(sample))

    def make(self, family: str, split: str, seed: int, index: int, severity: int) -> Sample | None:
        if severity not in self.severities:
            raise ValueError(f"{self.name} has severities 0..{len(self.levels) - 1}, got {severity}")
        clean = generate_sample(family, split, seed, index)
        if severity == 0:
            return clean
        if not self.answerable(clean):
            return None
        return self.apply(clean, severity, self.rng(seed, index, severity))

    def apply(self, sample: Sample, severity: int, rng: np.random.Generator) -> Sample | None:
        """Every image through the transform, one stream for the whole sample (noise differs per frame)."""
        level = self.levels[severity]
        images = [self.transform(image, level, rng, sample) for image in sample.images]
        return self.shifted(sample, images, {"name": self.name, "severity": severity, "level": level})

    @staticmethod
    def shifted(sample: Sample, images: list[Image.Image], record: dict) -> Sample:
        return dataclasses.replace(sample, images=images, meta={**sample.meta, "shift": record})


@dataclasses.dataclass(frozen=True)
class OccluderShift(ImageShift):
    """The occluder is placed once per sample: the same spot on every frame and on both images of a
    pair, so it never moves or changes (a moving grey block would be a change to report)."""

    def apply(self, sample: Sample, severity: int, rng: np.random.Generator) -> Sample | None:
        fraction = self.levels[severity]
        box = place_occluder(sample, fraction, rng)
        if box is None:
            return None
        covered = (box[2] - box[0]) * (box[3] - box[1]) / (sample.width * sample.height)
        record = {"name": self.name, "severity": severity, "level": fraction}
        record.update(box=box, fraction=round(covered, 4))
        return self.shifted(sample, [paint(image, box) for image in sample.images], record)


IMAGE_SHIFTS: dict[str, ImageShift] = {
    s.name: s
    for s in (
        ImageShift(
            "downscale", "resolution", "scale factor", (1.0, 0.5, 0.25, 0.125), transform=downscale,
            note="shrunk by the factor with area averaging, enlarged back with bicubic",
        ),
        ImageShift(
            "jpeg", "quality", "JPEG quality (None: not re-encoded)", (None, 50, 25, 10), transform=jpeg,
            note="encoded as JPEG at the quality and decoded",
        ),
        ImageShift(
            "blur", "quality", "gaussian sigma (pixels)", (0, 1, 2, 4), transform=blur,
            note="gaussian blur",
        ),
        ImageShift(
            "noise", "quality", "noise std (0..255)", (0, 12, 25, 50), transform=noise,
            note="independent gaussian noise per pixel and channel, clipped to 0..255",
        ),
        ImageShift(
            "brightness", "quality", "brightness factor", (1.0, 0.6, 0.35, 0.2), transform=brightness,
            note="every channel multiplied by the factor (darker)",
        ),
        ImageShift(
            "contrast", "quality", "contrast factor", (1.0, 0.5, 0.3, 0.15), transform=contrast,
            note="pixels pulled towards the mean grey (lower contrast)",
        ),
        OccluderShift(
            "occluder", "quality", "occluded fraction of the canvas", (0.0, 0.05, 0.10, 0.20),
            transform=occluder,
            note="a grey rectangle at a random place clear of every object, the same on every frame",
        ),
        ImageShift(
            "grayscale", "domain", "desaturation", (0.0, 0.5, 1.0), transform=grayscale,
            excludes=COLOR_QTYPES, drops_color=True,
            note="colour blended towards luma; questions that need or name a colour are skipped",
        ),
    )
}  # fmt: skip
