"""LLaVA-1.5 against transformers: logits within 1e-4 and identical greedy tokens."""

import pytest
import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration

from parity import greedy_pair, max_diff_real, prompt_batch, save_and_load
from tiny import IMAGE_TOKEN, TEXT, VISION

FEATURES = [(-2, "default"), ([0, -1], "full"), ([-3, 1], "default"), (-1, "full")]


def build(tmp_path, text="llama_gqa", layer=-2, strategy="default", **extra):
    cfg = LlavaConfig(
        text_config=TEXT[text],
        vision_config=VISION,
        image_token_index=IMAGE_TOKEN,
        vision_feature_layer=layer,
        vision_feature_select_strategy=strategy,
        **extra,
    )
    return save_and_load(LlavaForConditionalGeneration(cfg), tmp_path)


def n_image_tokens(strategy):
    return (VISION["image_size"] // VISION["patch_size"]) ** 2 + (strategy == "full")


@pytest.mark.parametrize("text", sorted(TEXT))
@pytest.mark.parametrize("layer,strategy", FEATURES)
def test_logits_and_greedy_match(tmp_path, text, layer, strategy):
    hf, vl = build(tmp_path, text, layer, strategy)
    n = n_image_tokens(strategy)
    ids, mask = prompt_batch([n, n], text_len=12 + 4)
    ids[1, :3] = 7  # the second row has no padding: three more text tokens
    mask[1] = 1
    ids[0, :3], mask[0, :3] = 0, 0
    pixels = torch.randn(2, 3, VISION["image_size"], VISION["image_size"])
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    ours = vl(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    assert max_diff_real(theirs, ours, mask) <= 1e-4
    a, b = greedy_pair(hf, vl, ids, mask, pixel_values=pixels)
    assert a.shape == b.shape == (2, 16)
    assert torch.equal(a, b)


def test_projector_without_bias_and_gelu_tanh(tmp_path):
    hf, vl = build(tmp_path, multimodal_projector_bias=False, projector_hidden_act="gelu_pytorch_tanh")
    ids, mask = prompt_batch([n_image_tokens("default")])
    pixels = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    assert (
        max_diff_real(theirs, vl(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits, mask)
        <= 1e-4
    )


def test_text_only_prompt_matches(tmp_path):
    hf, vl = build(tmp_path)
    ids = torch.randint(6, 160, (1, 20))
    with torch.no_grad():
        theirs = hf(input_ids=ids).logits
    assert float((theirs - vl(input_ids=ids).logits).abs().max()) <= 1e-4


def test_cached_decoding_equals_uncached(tmp_path):
    _, vl = build(tmp_path)
    n = n_image_tokens("default")
    ids, mask = prompt_batch([n, n])
    mask[1, :2], ids[1, :2] = 0, 0
    pixels = torch.randn(2, 3, 28, 28)
    full = vl(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    split = ids.shape[1] - 5
    cache = vl.new_cache(2, ids.shape[1])
    first = vl(
        input_ids=ids[:, :split], attention_mask=mask[:, :split], pixel_values=pixels, cache=cache
    ).logits
    steps = [
        vl(input_ids=ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache).logits
        for t in range(split, ids.shape[1])
    ]
    cached = torch.cat([first, *steps], dim=1)
    assert max_diff_real(full, cached, mask) <= 1e-5


def test_linear_projector_llava_1_0(tmp_path):
    """LLaVA 1.0's single linear projector: transformers has none, so check the wiring by hand."""
    hf, _ = build(tmp_path)
    cfg = hf.config.to_dict()
    from vislang.config import LlavaConfig as VLConfig
    from vislang.models import Llava

    vl = Llava(VLConfig.from_hf({**cfg, "projector_type": "linear"})).eval()
    pixels = torch.randn(1, 3, 28, 28)
    feats = vl.vision.select(pixels, -2, "default")
    expected = feats @ vl.projector.linear_1.weight.T + vl.projector.linear_1.bias
    assert torch.allclose(vl.image_features(pixels)[0], expected[0], atol=1e-6)
    assert vl.cfg.to_hf()["projector_type"] == "linear"


def test_loss_with_labels_matches(tmp_path):
    hf, vl = build(tmp_path)
    ids, mask = prompt_batch([16, 16])
    labels = ids.masked_fill(ids == IMAGE_TOKEN, -100)
    labels[:, :8] = -100  # prompt tokens do not count
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels).loss
        ours = vl(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels).loss
    assert abs(float(theirs) - float(ours)) <= 1e-5
