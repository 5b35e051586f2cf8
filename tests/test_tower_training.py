"""Stage 1: the vision tower's dense targets, heads, losses and resumable training loop.

Targets are checked on hand-made scenes against geometry worked out here (cells wholly inside or
outside a shape), and the patch order against the processor's own pixels. Towers are tiny.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from vislang.data.world import WorldConfig, generate_sample
from vislang.data.world.sample import Sample
from vislang.data.world.scene import Scene, SceneObject, draw_scene
from vislang.data.world.text_family import draw_signs, sign_size
from vislang.errors import VislangError
from vislang.processing.qwen2vl import QwenImageTransform
from vislang.train import loop as loop_module
from vislang.train.dense_targets import COLORS, IGNORE, LETTERS, MOTIONS, SHAPES, SIZES, tower_items
from vislang.train.tower import (
    CHECKPOINT,
    HEAD_WEIGHTS,
    TOWER_WEIGHTS,
    TowerConfig,
    build,
    default_vision,
    forward,
    train_tower,
)
from vislang.train.tower_data import FastPatches, TowerData, collate
from vislang.train.tower_heads import tower_losses
from vislang.vision import QwenVisionTransformer
from vislang.vision.qwen2vl import patch_positions

P = 14


def tiny_config(**kw) -> TowerConfig:
    vision = dataclasses.replace(default_vision(), depth=2, embed_dim=32, num_heads=2)
    base = dict(
        vision=vision, steps=6, batch_size=3, warmup_steps=2, head_hidden=32, eval_samples=0,
        sizes=[[112, 112]], checkpoint_minutes=60.0, lr=2e-3,
    )  # fmt: skip
    return TowerConfig(**(base | kw))


def scene_sample(objects: list[SceneObject], width: int = 224, height: int = 224, signs=None) -> Sample:
    scene = Scene(width, height, "white", 0.0, 0, objects)
    image = draw_scene(scene)
    meta = {}
    if signs:
        draw_signs(image, signs)
        meta["signs"] = signs
    family = "text" if signs else "scene"
    return Sample(family, "", "", "", "", [image], objects=scene.records(), meta=meta)


def grid_of(labels: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Labels in the tower's order back onto the [rows, cols] grid, through the tower's own positions."""
    pos = patch_positions(torch.tensor([[1, rows, cols]]), 2).numpy()
    out = np.full((rows, cols, *labels.shape[1:]), -1, labels.dtype)
    out[pos[:, 0], pos[:, 1]] = labels
    return out


SQUARE = SceneObject("square", "red", "large", (220, 40, 40), 115.0, 108.0, 30.0, 0.0)
CIRCLE = SceneObject("circle", "blue", "small", (40, 80, 220), 40.0, 40.0, 12.0, 0.0)


def test_scene_targets_follow_the_geometry():
    item = tower_items(scene_sample([SQUARE, CIRCLE]))[0]
    assert item.grid == (1, 16, 16)
    color, shape, size = (grid_of(item.patch[k], 16, 16) for k in ("color", "shape", "size"))
    half = SQUARE.r / math.sqrt(2)  # the inscribed, unrotated square's half side
    for row in range(16):
        for col in range(16):
            x0, y0 = col * P, row * P
            inside = SQUARE.cx - half <= x0 and x0 + P <= SQUARE.cx + half
            inside &= SQUARE.cy - half <= y0 and y0 + P <= SQUARE.cy + half
            if inside:
                assert color[row, col] == 1 + COLORS.index("red")
                assert shape[row, col] == 1 + SHAPES.index("square")
                assert size[row, col] == 1 + SIZES.index("large")
            nearest = [
                math.hypot(min(max(o.cx, x0), x0 + P) - o.cx, min(max(o.cy, y0), y0 + P) - o.cy) - o.r
                for o in (SQUARE, CIRCLE)
            ]
            if min(nearest) > 0:  # the cell misses every bounding circle
                assert color[row, col] == shape[row, col] == size[row, col] == 0
    blue = color == 1 + COLORS.index("blue")
    assert blue.any() and (shape[blue] == 1 + SHAPES.index("circle")).all()
    assert (size[blue] == 1 + SIZES.index("small")).all()

    centre = grid_of(item.patch["centre"], 16, 16)
    assert centre.sum() == 2
    assert centre[int(108 // P), int(115 // P)] == 1 and centre[int(40 // P), int(40 // P)] == 1

    # box: from a cell centre, the distances to the square's recorded box edges
    box = grid_of(item.patch["box"], 16, 16)
    x1, y1, x2, y2 = scene_sample([SQUARE]).objects[0]["box"]
    row, col = 7, 8
    cx, cy = (col + 0.5) * P, (row + 0.5) * P
    np.testing.assert_allclose(box[row, col] * 224, [cx - x1, cy - y1, x2 - cx, y2 - cy], atol=1e-4)
    assert np.isnan(box[0, 15]).all()
    assert (item.patch["sign"] == 0).all() and (item.patch["letter"] == IGNORE).all()
    assert (item.patch["motion"] == IGNORE).all() and (item.patch["layout"] == IGNORE).all()
    assert item.image["count"].tolist() == [2]
    assert item.image["color_count"].tolist() == [1 if c in ("red", "blue") else 0 for c in COLORS]
    assert item.image["shape_count"].tolist() == [1 if s in ("square", "circle") else 0 for s in SHAPES]
    assert (item.image["fashion"] == IGNORE).all()


def test_patch_order_matches_the_processor():
    """Paint every 14 x 14 cell its own colour: patch n of pixel_values must be the cell the labels say."""
    rows, cols = 8, 12
    image = Image.new("RGB", (cols * P, rows * P))
    draw = ImageDraw.Draw(image)
    for r in range(rows):
        for c in range(cols):
            draw.rectangle([c * P, r * P, c * P + P - 1, r * P + P - 1], fill=(r * 20, c * 20, 7))
    sample = Sample("scene", "", "", "", "", [image], objects=[])
    item = tower_items(sample, resized=(rows * P, cols * P))[0]
    transform = QwenImageTransform()
    pixels = transform.images([image])["pixel_values"].view(-1, 3, 2, P, P)  # [N, C, frames, p, p]
    mean, std = torch.tensor(transform.image_mean), torch.tensor(transform.image_std)
    rgb = (pixels[:, :, 0, 0, 0] * std + mean) * 255  # each patch's colour back in bytes
    seen = torch.stack([rgb[:, 0] / 20, rgb[:, 1] / 20], 1).round().long()  # (row, column) painted in
    assert item.patch["color"].shape == (rows * cols,)
    positions = patch_positions(torch.tensor([item.grid]), 2)
    assert torch.equal(seen, positions)
    # and a label put on one cell lands on that cell's patch
    cells = np.arange(rows * cols).reshape(1, rows, cols)
    from vislang.train.dense_targets import tower_order

    ordered = tower_order(cells, 2)
    assert (ordered == (seen[:, 0] * cols + seen[:, 1]).numpy()).all()


def test_fast_patches_are_the_processors_bit_for_bit():
    transform = QwenImageTransform(min_pixels=112 * 112, max_pixels=448 * 448)
    patches = FastPatches(transform)
    rng = np.random.default_rng(0)
    for size in ((224, 224), (300, 170), (90, 400)):
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        fast, grid = patches([image])
        ref = transform.images([image])
        assert torch.equal(torch.from_numpy(fast), ref["pixel_values"])
        assert list(grid) == ref["image_grid_thw"][0].tolist()
    frames = [Image.fromarray(rng.integers(0, 256, (112, 140, 3), dtype=np.uint8)) for _ in range(4)]
    fast, grid = patches(frames)
    assert torch.equal(torch.from_numpy(fast), transform.videos([frames])["pixel_values_videos"])
    assert grid[0] == 2


def test_sign_letters_read_left_to_right():
    word, font_size = "cat", 26
    w, h = sign_size(word, font_size)
    sign = {"word": word, "font_size": font_size, "box": [40, 60, 40 + w, 60 + h]}
    item = tower_items(scene_sample([], signs=[sign]))[0]
    sign_grid, letters = grid_of(item.patch["sign"], 16, 16), grid_of(item.patch["letter"], 16, 16)
    # cells wholly inside the sign are sign cells; cells wholly outside are not
    for row in range(16):
        for col in range(16):
            x0, y0 = col * P, row * P
            if x0 >= 40 and x0 + P <= 40 + w and y0 >= 60 and y0 + P <= 60 + h:
                assert sign_grid[row, col] == 1
            if x0 + P <= 40 or x0 >= 40 + w or y0 + P <= 60 or y0 >= 60 + h:
                assert sign_grid[row, col] == 0 and letters[row, col] == IGNORE
    middle = letters[int((60 + h / 2) // P)]
    read = [LETTERS[v - 1] for v in middle if v > 0]
    assert "".join(dict.fromkeys(read)) == "CAT"  # each letter once or more, in order


def test_video_motion_labels():
    sample = generate_sample("video", "train", 0, 3)
    item = tower_items(sample, pairs=[0])[0]
    assert item.grid == (1, 16, 16) and len(item.frames) == 2
    motion = grid_of(item.patch["motion"], 16, 16)
    shape = grid_of(item.patch["shape"], 16, 16)
    assert ((motion != IGNORE) == (shape > 0)).all()  # motion is asked of object cells only
    for k, obj in enumerate(sample.objects):
        (x0, y0), (x1, y1) = sample.meta["positions"][0][k], sample.meta["positions"][1][k]
        cell = motion[int((y0 + y1) / 2 // P), int((x0 + x1) / 2 // P)]
        movers = sample.meta["movers"]
        want = sample.meta["directions"][movers.index(k)] if k in movers else "still"
        assert MOTIONS[cell] == want, obj


def test_losses_skip_what_a_family_cannot_know():
    cfg = tiny_config()
    tower, heads = build(cfg)
    data = TowerData(cfg)
    document = tower_items(generate_sample("document", "train", 0, 1, WorldConfig(112, 112)))
    batch = collate(document, data.patches)
    losses = tower_losses(forward(tower, heads, batch, bf16=False), batch.patch, batch.image, {})
    assert set(losses) == {"loss", "layout"}


def test_loss_falls_overfitting_one_batch():
    cfg = tiny_config()
    torch.manual_seed(0)
    tower, heads = build(cfg)
    batch = TowerData(cfg).batch(0)
    params = [*tower.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    losses = []
    for _ in range(25):
        loss = tower_losses(forward(tower, heads, batch, bf16=False), batch.patch, batch.image, {})["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


LOGGED = ("loss", "color", "shape", "centre", "box", "count")


def test_resume_repeats_the_same_losses(tmp_path):
    cfg = tiny_config()
    whole = train_tower(cfg, tmp_path / "whole", progress=False)
    assert whole.finished and len(whole.log) == cfg.steps

    first = train_tower(cfg, tmp_path / "split", max_steps=3, progress=False)
    assert not first.finished and len(first.log) == 3
    with pytest.raises(VislangError, match="already holds a run"):
        train_tower(cfg, tmp_path / "split", progress=False)
    rest = train_tower(cfg, tmp_path / "split", resume=True, progress=False)
    assert rest.finished and [r["step"] for r in rest.log] == list(range(cfg.steps))
    for a, b in zip(whole.log, rest.log):
        for name in LOGGED:
            if name in a:
                assert abs(a[name] - b[name]) <= 1e-6, (a["step"], name, a[name], b[name])
    for name, tensor in whole.tower.state_dict().items():
        assert torch.allclose(tensor, rest.tower.state_dict()[name], atol=1e-6), name

    # the saved tower loads as it is into a Qwen2-VL vision tower; the heads are apart
    saved = load_file(str(tmp_path / "split" / TOWER_WEIGHTS))
    fresh = QwenVisionTransformer(cfg.vision)
    assert set(saved) == set(fresh.state_dict())
    fresh.load_state_dict(saved)
    assert not set(load_file(str(tmp_path / "split" / HEAD_WEIGHTS))) & set(saved)
    header = (tmp_path / "split" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"color_acc", "centre_f1", "count_acc", "images_per_s"} <= set(header)


def test_a_new_run_can_start_from_an_earlier_tower(tmp_path):
    cfg = tiny_config()
    done = train_tower(cfg, tmp_path / "first", progress=False)
    warm = dataclasses.replace(cfg, init=str(tmp_path / "first"))
    again = train_tower(warm, tmp_path / "second", max_steps=1, progress=False)
    cold = train_tower(cfg, tmp_path / "cold", max_steps=1, progress=False)
    assert again.log[0]["loss"] < cold.log[0]["loss"]  # it starts where the first run ended
    assert done.log[-1]["loss"] == pytest.approx(again.log[0]["loss"], rel=0.5)


def test_checkpoints_are_atomic(tmp_path, monkeypatch):
    cfg = tiny_config(steps=4)
    train_tower(cfg, tmp_path, max_steps=1, progress=False)
    before = (tmp_path / CHECKPOINT).read_bytes()

    def crash(state, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a checkpoi")
        raise OSError("disk full")

    monkeypatch.setattr(loop_module.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        train_tower(cfg, tmp_path, resume=True, max_steps=1, progress=False)
    monkeypatch.undo()
    assert (tmp_path / CHECKPOINT).read_bytes() == before  # the old checkpoint, whole
    assert not list(tmp_path.glob("*.tmp"))
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert ckpt["step"] == 1
