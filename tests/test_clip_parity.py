"""CLIP against transformers: image and text features, logits_per_image."""

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from parity import save_and_load
from tiny import VISION

BOS, EOS = 98, 99


def build(tmp_path, eos, act):
    text = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=100,
        max_position_embeddings=20,
        eos_token_id=eos,
        bos_token_id=BOS,
        pad_token_id=0,
        hidden_act=act,
    )
    cfg = CLIPConfig(text_config=text, vision_config=dict(VISION, hidden_act=act), projection_dim=16)
    return save_and_load(CLIPModel(cfg), tmp_path)


def texts():
    """Three right-padded texts of different lengths, each ending in EOS (the highest id)."""
    lengths = [9, 12, 6]
    ids = torch.randint(3, BOS, (3, 12))
    ids[:, 0] = BOS
    for r, n in enumerate(lengths):
        ids[r, n - 1] = EOS
        ids[r, n:] = 0
    mask = (torch.arange(12)[None] < torch.tensor(lengths)[:, None]).long()
    return ids, mask


# eos_token_id == 2 is the legacy rule (pool at the highest id); otherwise pool at the first EOS
@pytest.mark.parametrize("eos,act", [(2, "quick_gelu"), (EOS, "gelu")])
def test_features_and_logits_match(tmp_path, eos, act):
    hf, vl = build(tmp_path, eos, act)
    ids, mask = texts()
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        image = hf.get_image_features(pixel_values=pixels).pooler_output
        text = hf.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        ours = vl(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        assert float((image - vl.get_image_features(pixels)).abs().max()) <= 1e-4
        assert float((text - vl.get_text_features(ids, mask)).abs().max()) <= 1e-4
    assert ours.logits_per_image.shape == (2, 3)
    assert float((theirs.logits_per_image - ours.logits_per_image).abs().max()) <= 1e-4
    assert float((theirs.logits_per_text - ours.logits_per_text).abs().max()) <= 1e-4
    assert float((theirs.text_embeds - ours.text_embeds).abs().max()) <= 1e-4


def test_embed_images_and_texts(tmp_path):
    """clip.embed on raw inputs equals transformers' processor + features, normalized."""
    import numpy as np
    from PIL import Image

    import vislang
    from tiny import clip_folder

    hf, fast, images = clip_folder(tmp_path)
    vl = vislang.load(tmp_path)
    pics = [
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (30 + i, 50, 3), dtype=np.uint8))
        for i in range(2)
    ]
    words = ["a red circle", "a blue square describe it"]
    out = vl.embed(images=pics, texts=words)
    batch = fast(words, padding=True, return_tensors="pt")
    with torch.no_grad():
        image = hf.get_image_features(**images(pics, return_tensors="pt")).pooler_output
        txt = hf.get_text_features(**batch).pooler_output
    assert float((out["image_embeds"] - torch.nn.functional.normalize(image, dim=-1)).abs().max()) <= 1e-4
    assert float((out["text_embeds"] - torch.nn.functional.normalize(txt, dim=-1)).abs().max()) <= 1e-4
