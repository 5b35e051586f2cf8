"""Dense targets for the vision tower alone: what each 14 x 14 patch shows, read off the world's ground truth.

Stage 1 of the default model trains the tower with no language model in the loop, so it can see
hundreds of thousands of images on a CPU. Every patch gets labels computed from the exact geometry
the renderer drew (never from pixels): the colour, shape and size of the object covering it, its
box, whether the object's centre lies in it, how it moves (video), whether it is a sign and which
letter it shows (text), what part of a document or window it is (document, ui). Each image also gets
whole-image labels: how many objects, of each colour and shape; the class of a real image.

Labels are in the tower's patch order (frame by frame, 2 x 2 merge block by block, row-major inside
a block), for the patch grid of the image as the processor resizes it (`smart_resize`). A label a
family cannot know is IGNORE (NaN for boxes): the loss skips it.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..data.world import palette as P
from ..data.world.fonts import font
from ..data.world.render import shape_coverage
from ..data.world.video_family import DIRECTIONS
from ..processing.qwen2vl import smart_resize

IGNORE = -100
COLORS = tuple(P.COLORS)
SHAPES = P.SHAPES
SIZES = tuple(P.SIZES)
MOTIONS = ("still", *DIRECTIONS)
LETTERS = string.ascii_uppercase
# document and window parts, in painting priority: where two cover a cell, the later one wins
LAYOUT = ("background", "window", "title_bar", "text", "bar", "text_field", "button", "checkbox", "checked")
MAX_COUNT = P.MAX_OBJECTS

OWN_FRACTION = 0.3  # an object (sign, widget) owns a cell it covers this much of ...
CORE = 4  # ... or whose central CORE x CORE pixels it covers at least half of
LETTER_FRACTION = 0.25  # a cell shows the letter whose ink box covers most of it, when at least this much

# per-patch class heads: name -> classes (index 0 is "nothing": background, none, still)
PATCH_CLASSES = {
    "color": 1 + len(COLORS),
    "shape": 1 + len(SHAPES),
    "size": 1 + len(SIZES),
    "centre": 2,
    "motion": len(MOTIONS),
    "sign": 2,
    "letter": 1 + len(LETTERS),
    "layout": len(LAYOUT),
}
# whole-image class heads: name -> (counters, classes); counters > 1 is one count per colour / shape
IMAGE_CLASSES = {
    "count": (1, MAX_COUNT + 1),
    "color_count": (len(COLORS), MAX_COUNT + 1),
    "shape_count": (len(SHAPES), MAX_COUNT + 1),
    "fashion": (1, 10),
    "digit": (1, 10),
}
SCENE_FAMILIES = ("scene", "text", "multi", "video")


@dataclass
class Grid:
    """How a W x H canvas lands on the tower's patch grid after the processor's resize."""

    width: int
    height: int
    rows: int
    cols: int
    patch: int = 14

    @property
    def sx(self) -> float:  # resized pixels per canvas pixel
        return self.cols * self.patch / self.width

    @property
    def sy(self) -> float:
        return self.rows * self.patch / self.height

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Cell centres in canvas pixels: x [cols], y [rows]."""
        return (np.arange(self.cols) + 0.5) * self.patch / self.sx, (
            np.arange(self.rows) + 0.5
        ) * self.patch / self.sy


@dataclass
class TowerItem:
    """One input of the tower (an image, or a video cut to whole temporal patches) and its labels."""

    frames: list[Image.Image]  # one image, or an even number of video frames
    grid: tuple[int, int, int]  # (t, h, w) patches
    patch: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [N] int64; "box" [N, 4] float32
    image: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [counters] int64


def tower_order(cells: np.ndarray, merge: int) -> np.ndarray:
    """[t, h, w, ...] grid labels -> [t * h * w, ...] in the tower's order (2 x 2 merge blocks contiguous)."""
    t, h, w = cells.shape[:3]
    rest = cells.shape[3:]
    blocks = cells.reshape(t, h // merge, merge, w // merge, merge, *rest).swapaxes(2, 3)
    return blocks.reshape(t * h * w, *rest)


def cell_fractions(mask: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """A [H, W] canvas coverage in 0..1 -> (share of each cell covered, share of its core covered), [h, w]."""
    p, rows, cols = grid.patch, grid.rows, grid.cols
    if mask.shape != (rows * p, cols * p):  # area-average onto the resized canvas the tower sees
        mask = np.asarray(Image.fromarray(mask, "F").resize((cols * p, rows * p), Image.Resampling.BOX))
    cells = mask.reshape(rows, p, cols, p)
    lo = (p - CORE) // 2
    return cells.mean((1, 3)), cells[:, lo : lo + CORE, :, lo : lo + CORE].mean((1, 3))


def owned(share: np.ndarray, core: np.ndarray) -> np.ndarray:
    return (share >= OWN_FRACTION) | (core >= 0.5)


def object_mask(obj: dict, width: int, height: int) -> np.ndarray:
    """The object's anti-aliased coverage over the whole canvas, [H, W] float32 in 0..1, as it was painted."""
    cov = shape_coverage(obj["shape"], obj["cx"], obj["cy"], obj["r"], obj["rotation"])
    out = np.zeros((height, width), np.float32)
    m = np.asarray(cov.mask, np.float32) / 255
    x0, y0 = cov.x0, cov.y0
    # the mask's padding may reach past the canvas: clip both sides alike
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + m.shape[1], width), min(y0 + m.shape[0], height)
    out[cy0:cy1, cx0:cx1] = m[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    return out


def scene_cells(
    frames: list[list[dict]], grid: Grid, motions: list[int] | None = None
) -> dict[str, np.ndarray]:
    """Object labels of one temporal patch, [h, w] each (box [h, w, 4]).

    frames: the objects of each frame the patch stacks (one for an image), the same objects in the same
    order; coverage, centre and box are averaged over them. motions: each object's MOTIONS index.
    """
    rows, cols = grid.rows, grid.cols
    out = {name: np.zeros((rows, cols), np.int64) for name in ("color", "shape", "size", "centre", "motion")}
    out["motion"][:] = IGNORE  # motion is only asked of object cells
    out["box"] = np.full((rows, cols, 4), np.nan, np.float32)
    best = np.zeros((rows, cols), np.float32)
    xs, ys = grid.cell_centres()
    for k in range(len(frames[0])):
        looks = [objects[k] for objects in frames]
        mask = np.mean([object_mask(o, grid.width, grid.height) for o in looks], axis=0, dtype=np.float32)
        share, core = cell_fractions(mask, grid)
        # objects never overlap: a cell two of them reach goes to the one covering more of it
        mine = owned(share, core) & (share > best)
        best = np.where(mine, share, best)
        obj = looks[0]
        out["color"][mine] = 1 + COLORS.index(obj["color"])
        out["shape"][mine] = 1 + SHAPES.index(obj["shape"])
        out["size"][mine] = 1 + SIZES.index(obj["size"])
        if motions is not None:
            out["motion"][mine] = motions[k]
        x1, y1, x2, y2 = np.mean([o["box"] for o in looks], axis=0)
        # left, top, right, bottom box edges from each cell centre, as fractions of the canvas
        left, right = (xs - x1) / grid.width, (x2 - xs) / grid.width  # [w]
        top, bottom = (ys - y1) / grid.height, (y2 - ys) / grid.height  # [h]
        dist = np.stack(np.broadcast_arrays(left[None], top[:, None], right[None], bottom[:, None]), -1)
        out["box"][mine] = dist[mine]
        cx = np.mean([o["cx"] for o in looks]) * grid.sx
        cy = np.mean([o["cy"] for o in looks]) * grid.sy
        row, col = min(int(cy // grid.patch), rows - 1), min(int(cx // grid.patch), cols - 1)
        out["centre"][row, col] = 1
    return out


def box_fractions(box, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """A pixel rectangle [x1, y1, x2, y2] (x2, y2 exclusive) -> (cell share covered, core share covered)."""

    def overlap(lo: float, hi: float, scale: float, n: int, span: float) -> np.ndarray:
        """[n, 2]: the share of each cell, and of its central `span` pixels, inside [lo, hi) canvas pixels."""
        sizes = np.array([grid.patch, span])
        starts = np.arange(n)[:, None] * grid.patch + (grid.patch - sizes) / 2
        inside = np.minimum(hi * scale, starts + sizes) - np.maximum(lo * scale, starts)
        return np.clip(inside, 0, None) / sizes

    x1, y1, x2, y2 = box
    fx, fy = overlap(x1, x2, grid.sx, grid.cols, CORE), overlap(y1, y2, grid.sy, grid.rows, CORE)
    return fy[:, None, 0] * fx[None, :, 0], fy[:, None, 1] * fx[None, :, 1]


def letter_boxes(sign: dict) -> list[tuple[int, list[float]]]:
    """(letter index, ink box) of every letter of a sign's word, in canvas pixels.

    The sign draws the word anchored "mm" at its centre, which is the word anchored "ls" (left,
    baseline) at a shifted pen; letter k then starts where the prefix through k ends less its own
    advance, which keeps the kerning with the letter before it (checked against the drawn pixels).
    """
    word, face = sign["word"].upper(), font(sign["font_size"], "sans-bold")
    x1, y1, x2, y2 = sign["box"]
    l_mm, t_mm, _, _ = face.getbbox(word, anchor="mm")
    l_ls, t_ls, _, _ = face.getbbox(word, anchor="ls")
    pen_x, pen_y = (x1 + x2) // 2 + l_mm - l_ls, (y1 + y2) // 2 + t_mm - t_ls
    out = []
    for k, ch in enumerate(word):
        x = pen_x + face.getlength(word[: k + 1]) - face.getlength(ch)
        l, t, r, b = face.getbbox(ch, anchor="ls")
        out.append((LETTERS.index(ch), [x + l, pen_y + t, x + r, pen_y + b]))
    return out


def sign_cells(signs: list[dict], grid: Grid) -> dict[str, np.ndarray]:
    """sign [h, w]: 1 inside a sign, else 0. letter [h, w]: on a sign, 1 + the letter the cell shows or 0
    for none; IGNORE off signs."""
    sign = np.zeros((grid.rows, grid.cols), np.int64)
    letter = np.full((grid.rows, grid.cols), IGNORE, np.int64)
    for s in signs:
        inside = owned(*box_fractions(s["box"], grid))
        sign[inside] = 1
        letter[inside] = 0
        best = np.zeros((grid.rows, grid.cols))
        for index, box in letter_boxes(s):
            share, _ = box_fractions(box, grid)
            mine = inside & (share >= LETTER_FRACTION) & (share > best)
            best = np.where(mine, share, best)
            letter[mine] = 1 + index
    return {"sign": sign, "letter": letter}


def layout_boxes(sample) -> list[tuple[str, list[int]]]:
    """(LAYOUT part, pixel box) of everything a document or window records."""
    m = sample.meta
    if sample.family == "ui":
        out = [("window", m["window_box"]), ("title_bar", m["title_bar_box"]), ("text", m["title_box"])]
        for w in m["widgets"]:
            part = "checked" if w["state"] == "checked" else w["type"]
            out += [(part, w["box"]), ("text", w["label_box"])]
        return out
    texts = [v for k, v in m.items() if k.endswith("_box") and v is not None]
    for key in ("items", "fields", "bars", "ticks"):
        for entry in m.get(key, []):
            texts += [v for k, v in entry.items() if k.endswith("box") and k != "box" and v is not None]
            if key == "ticks":
                texts.append(entry["box"])
    bars = [("bar", b["box"]) for b in m.get("bars", [])]
    return [("text", box) for box in texts] + bars


def layout_cells(sample, grid: Grid) -> np.ndarray:
    """[h, w] LAYOUT index of each cell: the highest-priority part that owns it."""
    out = np.zeros((grid.rows, grid.cols), np.int64)
    for part, box in sorted(layout_boxes(sample), key=lambda pb: LAYOUT.index(pb[0])):
        out[owned(*box_fractions(box, grid))] = LAYOUT.index(part)
    return out


def scene_counts(objects: list[dict]) -> dict[str, np.ndarray]:
    colors = [sum(o["color"] == c for o in objects) for c in COLORS]
    shapes = [sum(o["shape"] == s for o in objects) for s in SHAPES]
    return {
        "count": np.array([len(objects)]),
        "color_count": np.array(colors),
        "shape_count": np.array(shapes),
    }


def empty_labels(t: int, grid: Grid) -> dict[str, np.ndarray]:
    labels = {name: np.full((t, grid.rows, grid.cols), IGNORE, np.int64) for name in PATCH_CLASSES}
    labels["box"] = np.full((t, grid.rows, grid.cols, 4), np.nan, np.float32)
    return labels


def empty_image_labels() -> dict[str, np.ndarray]:
    return {name: np.full(n, IGNORE, np.int64) for name, (n, _) in IMAGE_CLASSES.items()}


def video_objects(sample, frame: int) -> list[dict]:
    """The objects as drawn in one frame of a video: the scene's, moved to that frame's positions."""
    return [
        o | {"cx": x, "cy": y, "box": box}
        for o, (x, y), box in zip(
            sample.objects, sample.meta["positions"][frame], sample.meta["boxes"][frame]
        )
    ]


def tower_items(
    sample,
    resized: tuple[int, int] | None = None,
    pairs: list[int] | None = None,
    patch: int = 14,
    merge: int = 2,
    temporal: int = 2,
) -> list[TowerItem]:
    """The tower's inputs of one sample, each with its labels in the tower's patch order.

    resized: the (height, width) the processor resizes the canvas to (default: smart_resize's).
    pairs: for a video, which temporal patches to keep (frames 2k, 2k + 1); default all whole ones.
    A multi sample gives two images, each labelled as a scene; a video gives one item.
    """
    width, height = sample.width, sample.height
    rows, cols = resized or smart_resize(height, width, patch * merge)
    grid = Grid(width, height, rows // patch, cols // patch, patch)
    family = sample.family

    def item(frames: list[Image.Image], cells: dict, image: dict) -> TowerItem:
        t = len(frames) // temporal if len(frames) > 1 else 1
        patch_labels = {k: tower_order(v, merge) for k, v in cells.items()}
        return TowerItem(frames, (t, grid.rows, grid.cols), patch_labels, image)

    if family == "video":
        whole = sample.meta["frames"] // temporal
        pairs = list(range(whole)) if pairs is None else pairs
        motion = [0] * len(sample.objects)
        for i, d in zip(sample.meta["movers"], sample.meta["directions"]):
            motion[i] = MOTIONS.index(d)
        labels, frames = empty_labels(len(pairs), grid), []
        for t, k in enumerate(pairs):
            shown = list(range(temporal * k, temporal * (k + 1)))
            cells = scene_cells([video_objects(sample, f) for f in shown], grid, motion)
            cells["sign"] = np.zeros((grid.rows, grid.cols), np.int64)
            for name, v in cells.items():
                labels[name][t] = v
            frames += [sample.images[f] for f in shown]
        return [item(frames, labels, empty_image_labels() | scene_counts(sample.objects))]

    if family in ("scene", "text", "multi"):
        scenes = [sample.objects, sample.meta["objects_after"]] if family == "multi" else [sample.objects]
        out = []
        for image, objects in zip(sample.images, scenes):
            labels = empty_labels(1, grid)
            cells = scene_cells([objects], grid) | sign_cells(sample.meta.get("signs", []), grid)
            del cells["motion"]
            for name, v in cells.items():
                labels[name][0] = v
            out.append(item([image], labels, empty_image_labels() | scene_counts(objects)))
        return out

    labels, image_labels = empty_labels(1, grid), empty_image_labels()
    if family in ("document", "ui"):
        labels["layout"][0] = layout_cells(sample, grid)
    elif family == "fashion":
        image_labels["fashion"][:] = sample.meta["label"]
    elif family == "digits":
        image_labels["digit"][:] = sample.meta["label"]
    else:
        raise ValueError(f"no tower labels for family {family!r}")
    return [item([sample.images[0]], labels, image_labels)]
