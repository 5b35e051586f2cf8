"""Hugging Face checkpoints both ways: vislang reads what transformers writes, transformers reads
what vislang writes (single file and shards), with no missing or unexpected keys."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    CLIPConfig,
    CLIPModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
)

import vislang
from parity import max_diff_real, prompt_batch
from tiny import IMAGE_TOKEN, TEXT, VISION

CLIP_TEXT = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    vocab_size=100,
    max_position_embeddings=20,
    eos_token_id=99,
    bos_token_id=98,
    pad_token_id=0,
)


def llava(text="llama_gqa"):
    cfg = LlavaConfig(text_config=TEXT[text], vision_config=VISION, image_token_index=IMAGE_TOKEN)
    return LlavaForConditionalGeneration(cfg).eval()


def llava_next():
    cfg = LlavaNextConfig(
        text_config=TEXT["qwen2"],
        vision_config=VISION,
        image_token_index=IMAGE_TOKEN,
        image_grid_pinpoints=[[28, 56], [56, 28]],
    )
    return LlavaNextForConditionalGeneration(cfg).eval()


def llava_logits(model, **kw):
    torch.manual_seed(1)
    ids, mask = prompt_batch([16])
    pixels = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, **kw).logits
    return out, mask


@pytest.mark.parametrize("text", ["llama_gqa", "smollm2_tied"])
@pytest.mark.parametrize("shard", [None, 20_000])
def test_vislang_save_loads_in_transformers(tmp_path, text, shard):
    hf = llava(text)
    hf.save_pretrained(tmp_path / "a")
    ours = vislang.load(tmp_path / "a")
    ours.save_pretrained(tmp_path / "b", **({"max_shard_bytes": shard} if shard else {}))
    if shard:
        assert (tmp_path / "b" / "model.safetensors.index.json").is_file()
    back, info = LlavaForConditionalGeneration.from_pretrained(tmp_path / "b", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    a, mask = llava_logits(hf)
    b, _ = llava_logits(back.eval())
    assert max_diff_real(a, b, mask) == 0.0
    reloaded = vislang.load(tmp_path / "b")  # and vislang reads its own shards
    c, _ = llava_logits(reloaded)
    assert max_diff_real(a, c, mask) <= 1e-4


def test_llava_next_round_trip(tmp_path):
    hf = llava_next()
    hf.save_pretrained(tmp_path / "a")
    vislang.load(tmp_path / "a").save_pretrained(tmp_path / "b", max_shard_bytes=30_000)
    back, info = LlavaNextForConditionalGeneration.from_pretrained(tmp_path / "b", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert torch.equal(back.model.image_newline, hf.model.image_newline)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["image_grid_pinpoints"] == [
        [28, 56],
        [56, 28],
    ]


def test_clip_round_trip(tmp_path):
    hf = CLIPModel(CLIPConfig(text_config=CLIP_TEXT, vision_config=VISION, projection_dim=16)).eval()
    hf.save_pretrained(tmp_path / "a")
    vislang.load(tmp_path / "a").save_pretrained(tmp_path / "b")
    back, info = CLIPModel.from_pretrained(tmp_path / "b", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(
            hf.get_image_features(pixel_values=pixels).pooler_output,
            back.get_image_features(pixel_values=pixels).pooler_output,
        )


def test_reads_every_llava_key_layout(tmp_path):
    """Original llava-hf keys (vision_tower.vision_model.*, language_model.model.*) and the
    transformers 5 in-memory names (model.language_model.*, lm_head) both load."""
    hf = llava()
    hf.save_pretrained(tmp_path / "a")
    expected, mask = llava_logits(hf)
    state = hf.state_dict()  # the in-memory names: model.vision_tower.*, model.language_model.*, lm_head
    assert any(k.startswith("model.language_model.") for k in state)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text((tmp_path / "a" / "config.json").read_text())
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "b" / "model.safetensors"))
    got, _ = llava_logits(vislang.load(tmp_path / "b"))
    assert max_diff_real(expected, got, mask) <= 1e-4
    vislang.load(tmp_path / "a").save_pretrained(tmp_path / "c")
    keys = load_file(str(tmp_path / "c" / "model.safetensors")).keys()
    assert any(k.startswith("vision_tower.vision_model.encoder.layers.0.") for k in keys)
    assert "language_model.lm_head.weight" in keys and "language_model.model.norm.weight" in keys


def test_unknown_model_type_lists_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "blip_2"}))
    with pytest.raises(vislang.UnsupportedModelError) as err:
        vislang.load(tmp_path)
    assert "blip_2" in str(err.value)
    for name in ("llava", "llava_next", "clip"):
        assert name in str(err.value)


def test_missing_and_extra_weights_are_refused(tmp_path):
    llava().save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state.pop("multi_modal_projector.linear_2.weight")
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(vislang.CheckpointError, match="missing"):
        vislang.load(tmp_path)
    state["multi_modal_projector.linear_2.weight"] = torch.zeros(48, 48)
    state["some_other_model.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(vislang.CheckpointError, match="some_other_model"):
        vislang.load(tmp_path)


def test_folder_without_weights_or_config(tmp_path):
    with pytest.raises(vislang.CheckpointError, match="config.json"):
        vislang.load(tmp_path)
    llava().config.save_pretrained(tmp_path)
    with pytest.raises(vislang.CheckpointError, match="safetensors"):
        vislang.load(tmp_path)


def test_config_round_trip_keeps_unknown_keys():
    from vislang.config import LlavaConfig as VLConfig

    hf = llava().config.to_dict()
    hf["text_config"]["my_custom_key"] = 7
    cfg = VLConfig.from_hf(hf)
    out = cfg.to_hf()
    assert out["text_config"]["my_custom_key"] == 7
    assert out["vision_feature_layer"] == -2 and out["image_token_index"] == IMAGE_TOKEN
    assert VLConfig.from_hf(out) == cfg
