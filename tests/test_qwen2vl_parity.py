"""Qwen2-VL and Qwen2.5-VL against transformers on tiny random checkpoints: logits within 1e-4 on
real positions and identical greedy tokens, through transformers' PIL image processor."""

import json

import pytest
import torch

import vislang
from qwen_tiny import (
    END,
    IMAGE,
    START,
    VIDEO,
    qwen_folder,
    random_image,
    text_config,
    vision_config,
)

VARIANTS = {
    "qwen2_vl": dict(v25=False, tie=False),
    "qwen2_vl_tied": dict(v25=False, tie=True),
    "qwen2_5_vl": dict(v25=True, tie=False),
    "qwen2_5_vl_tied": dict(v25=True, tie=True),
}


def load_pair(tmp_path, name="qwen2_vl", **kw):
    hf, images = qwen_folder(tmp_path, **VARIANTS[name], **kw)
    return hf, images, vislang.load(tmp_path)


def media_run(kind, count, start=3):
    token = IMAGE if kind == "image" else VIDEO
    return [START] + [token] * count + [END] + list(range(start, start + 2))


def batch(rows, pad=0):
    """Left-pad token lists into ids and mask."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, T - len(r) :] = torch.tensor(r)
        mask[i, T - len(r) :] = 1
    return ids, mask


def token_types(ids):
    return (ids == IMAGE).int() + 2 * (ids == VIDEO).int()


def compare(hf, vl, ids, mask, n_new=16, **inputs):
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, mm_token_type_ids=token_types(ids), **inputs).logits
        ours = vl(input_ids=ids, attention_mask=mask, **inputs).logits
    diff = float((theirs - ours)[mask.bool()].abs().max())
    gen = hf.generate(
        input_ids=ids,
        attention_mask=mask,
        mm_token_type_ids=token_types(ids),
        max_new_tokens=n_new,
        do_sample=False,
        **inputs,
    )[:, ids.shape[1] :]
    gc = hf.generation_config
    mine = vl.generate(
        ids, mask, max_new_tokens=n_new, eos_token_id=gc.eos_token_id, pad_token_id=gc.pad_token_id, **inputs
    )
    return diff, gen, mine


def n_tokens(grid):
    t, h, w = grid.tolist()
    return t * h * w // 4


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_two_images_of_different_sizes_and_left_padding(tmp_path, name):
    hf, processor, vl = load_pair(tmp_path, name)
    # row 0: two non-square images of different sizes; row 1: one image and more text (no padding)
    pics = [random_image(100, 37, 1), random_image(61, 140, 2), random_image(150, 90, 3)]
    out = processor(images=pics, return_tensors="pt")
    grids = out["image_grid_thw"]
    row0 = [9, 10] + media_run("image", n_tokens(grids[0])) + media_run("image", n_tokens(grids[1]), 20)
    row1 = [11] * 30 + media_run("image", n_tokens(grids[2]), 30)
    ids, mask = batch([row0, row1])
    assert mask[0].sum() < mask[1].sum() or mask[1].sum() < mask[0].sum()  # one row is padded
    diff, theirs, ours = compare(hf, vl, ids, mask, pixel_values=out["pixel_values"], image_grid_thw=grids)
    assert diff <= 1e-4
    assert theirs.shape == ours.shape == (2, 16)
    assert torch.equal(theirs, ours)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_video_with_odd_frame_count_then_an_image(tmp_path, name):
    """3 frames padded to 4 by vislang's own video path (temporal patch 2), then an image. The video
    is wide enough that the text after it starts at the same position under both position rules."""
    from vislang.processing.video import load_video

    hf, processor, vl = load_pair(tmp_path, name)
    frames = [random_image(168, 112, 10 + i) for i in range(3)]
    video = load_video(frames)
    vids = vl.image_transform.videos([video.frames])
    image = processor(images=[random_image(84, 56, 4)], return_tensors="pt")
    vgrid, igrid = vids["video_grid_thw"], image["image_grid_thw"]
    assert vgrid[0, 0].item() == 2  # 3 frames -> 4 -> 2 temporal patches
    row = [9] + media_run("video", n_tokens(vgrid[0])) + media_run("image", n_tokens(igrid[0]), 40)
    ids, mask = batch([row, [12] * 5 + row])
    inputs = dict(
        pixel_values=torch.cat([image["pixel_values"]] * 2),
        image_grid_thw=torch.cat([igrid] * 2),
        pixel_values_videos=torch.cat([vids["pixel_values_videos"]] * 2),
        video_grid_thw=torch.cat([vgrid] * 2),
    )
    if VARIANTS[name]["v25"]:
        inputs["second_per_grid_ts"] = torch.tensor([1.0, 1.0])
    diff, theirs, ours = compare(hf, vl, ids, mask, **inputs)
    assert diff <= 1e-4
    assert torch.equal(theirs, ours)


def test_text_only_rows_beside_image_rows(tmp_path):
    hf, processor, vl = load_pair(tmp_path, "qwen2_5_vl")
    out = processor(images=[random_image(70, 130, 5)], return_tensors="pt")
    ids, mask = batch([[9] * 4 + media_run("image", n_tokens(out["image_grid_thw"][0])), [10] * 9])
    diff, theirs, ours = compare(hf, vl, ids, mask, **out)
    assert diff <= 1e-4
    assert torch.equal(theirs, ours)


@pytest.mark.parametrize(
    "v25,text,vision",
    [
        (
            False,
            dict(heads=2, kv=1, head_dim=16, sections=(4, 2, 2), layers=3),
            dict(width=48, heads=3, depth=3),
        ),
        (False, dict(heads=6, kv=3, head_dim=4, sections=(1, 0, 1)), dict(width=16, heads=2, depth=1)),
        (
            True,
            dict(heads=2, kv=2, head_dim=12, sections=(2, 2, 2)),
            dict(width=24, heads=2, depth=4, window=84, full=(0, 3)),
        ),
        (
            True,
            dict(heads=4, kv=1, head_dim=8, sections=(2, 1, 1)),
            dict(width=32, heads=4, depth=2, window=28, full=()),
        ),
    ],
)
def test_other_shapes(tmp_path, v25, text, vision):
    """Other head counts, rotary sections, window sizes (one merge block, three) and full-attention
    layers: nothing is tied to the shapes of the tests above."""
    name = "qwen2_5_vl" if v25 else "qwen2_vl"
    out = text["heads"] * text["head_dim"]
    hf, processor, vl = load_pair(
        tmp_path, name, text=text_config(**text), vision=vision_config(v25, out=out, **vision)
    )
    out = processor(images=[random_image(150, 60, 6), random_image(50, 120, 7)], return_tensors="pt")
    g = out["image_grid_thw"]
    ids, mask = batch([media_run("image", n_tokens(g[0])) + media_run("image", n_tokens(g[1]))])
    diff, theirs, ours = compare(hf, vl, ids, mask, **out)
    assert diff <= 1e-4
    assert torch.equal(theirs, ours)


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl_tied"])
def test_save_pretrained_loads_in_transformers(tmp_path, name):
    from transformers import AutoModelForImageTextToText

    hf, processor, vl = load_pair(tmp_path / "a", name)
    vl.save_pretrained(tmp_path / "b")
    again, info = AutoModelForImageTextToText.from_pretrained(tmp_path / "b", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    out = processor(images=[random_image(90, 40, 8)], return_tensors="pt")
    ids, mask = batch([media_run("image", n_tokens(out["image_grid_thw"][0]))])
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask, mm_token_type_ids=token_types(ids), **out).logits
        b = again.eval()(input_ids=ids, attention_mask=mask, mm_token_type_ids=token_types(ids), **out).logits
    assert torch.equal(a, b)


def test_legacy_flat_config(tmp_path):
    """The hub's Qwen2-VL configs: text settings at the top level, rope_scaling {"type": "mrope"}, the
    vision part typed "qwen2_vl"."""
    hf, processor, vl = load_pair(tmp_path, "qwen2_vl")
    cfg = json.loads((tmp_path / "config.json").read_text())
    text = cfg.pop("text_config")
    rope = text.pop("rope_parameters")
    flat = {**cfg, **{k: v for k, v in text.items() if k != "model_type"}}
    flat["rope_theta"] = rope["rope_theta"]
    flat["rope_scaling"] = {"type": "mrope", "mrope_section": rope["mrope_section"]}
    flat["vision_config"]["model_type"] = "qwen2_vl"
    (tmp_path / "config.json").write_text(json.dumps(flat))
    legacy = vislang.load(tmp_path)
    assert legacy.cfg.text_config.mrope_section == rope["mrope_section"]
    out = processor(images=[random_image(64, 64, 9)], return_tensors="pt")
    ids, mask = batch([media_run("image", n_tokens(out["image_grid_thw"][0]))])
    assert torch.equal(legacy(input_ids=ids, **out).logits, vl(input_ids=ids, **out).logits)


def test_transformers_in_memory_key_names(tmp_path):
    """Weights named as transformers 5 holds them in memory (model.visual.*, model.language_model.*)."""
    from safetensors.torch import save_file

    hf, processor, vl = load_pair(tmp_path, "qwen2_5_vl")
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(tmp_path / "model.safetensors"))
    again = vislang.load(tmp_path)
    out = processor(images=[random_image(64, 100, 11)], return_tensors="pt")
    ids, _ = batch([media_run("image", n_tokens(out["image_grid_thw"][0]))])
    assert torch.equal(again(input_ids=ids, **out).logits, vl(input_ids=ids, **out).logits)


def test_vision_tower_alone(tmp_path):
    hf, processor, vl = load_pair(tmp_path, "qwen2_5_vl")
    out = processor(images=[random_image(200, 90, 12), random_image(33, 300, 13)], return_tensors="pt")
    with torch.no_grad():
        theirs = hf.model.visual(out["pixel_values"], grid_thw=out["image_grid_thw"]).pooler_output
    with torch.no_grad():
        ours = vl.merger(vl.vision(out["pixel_values"], out["image_grid_thw"]))
    assert float((theirs - ours).abs().max()) <= 1e-5


def test_mm_token_type_ids_are_accepted_not_needed(tmp_path):
    hf, processor, vl = load_pair(tmp_path, "qwen2_vl")
    out = processor(images=[random_image(64, 64, 14)], return_tensors="pt")
    ids, mask = batch([media_run("image", n_tokens(out["image_grid_thw"][0]))])
    a = vl(input_ids=ids, attention_mask=mask, **out).logits
    b = vl(input_ids=ids, attention_mask=mask, mm_token_type_ids=token_types(ids), **out).logits
    assert torch.equal(a, b)


def test_image_token_count_mismatch_names_both_numbers(tmp_path):
    hf, processor, vl = load_pair(tmp_path, "qwen2_vl")
    out = processor(images=[random_image(64, 64, 15)], return_tensors="pt")
    n = n_tokens(out["image_grid_thw"][0])
    ids, _ = batch([media_run("image", n - 1)])
    with pytest.raises(vislang.ImageTokenMismatchError, match=f"{n - 1}.*{n}|{n}.*{n - 1}"):
        vl(input_ids=ids, **out)


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl"])
def test_training_loss_and_gradients_match(tmp_path, name):
    """What training needs: the same loss, and the same gradients down to the patch embedding."""
    hf, processor, vl = load_pair(tmp_path, name)
    out = processor(images=[random_image(120, 64, 16)], return_tensors="pt")
    ids, mask = batch([[9, 10] + media_run("image", n_tokens(out["image_grid_thw"][0])) + [30, 31, 32]])
    labels = torch.where(ids == IMAGE, -100, ids)
    hf.train()
    theirs = hf(
        input_ids=ids, attention_mask=mask, mm_token_type_ids=token_types(ids), labels=labels, **out
    ).loss
    ours = vl.train()(input_ids=ids, attention_mask=mask, labels=labels, **out).loss
    assert abs(theirs.item() - ours.item()) <= 1e-5
    theirs.backward()
    ours.backward()
    pairs = [
        (hf.model.visual.patch_embed.proj.weight, vl.vision.patch_embed.proj.weight),
        (hf.model.visual.merger.mlp[0].weight, vl.merger.mlp[0].weight),
        (hf.model.visual.blocks[0].attn.qkv.weight, vl.vision.blocks[0].attn.qkv.weight),
    ]
    for a, b in pairs:
        assert float((a.grad - b.grad).abs().max()) <= 1e-5 * max(1.0, float(a.grad.abs().max()))
