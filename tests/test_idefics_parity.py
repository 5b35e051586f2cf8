"""IDEFICS v1 against transformers: logits within 1e-4, identical greedy tokens, gates, media masks,
checkpoint round trip and preprocessing."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import IdeficsForVisionText2Text, LlamaConfig, LlamaForCausalLM
from transformers.models.idefics.image_processing_pil_idefics import IdeficsImageProcessorPil

import vislang
from idefics_tiny import IMAGE_ID, SIZE, idefics_folder
from parity import max_diff_real
from vislang.nn.media_mask import media_locations
from vislang.processing.idefics import idefics_image_transform

VARIANTS = [
    dict(resampler=True, interval=1, alpha_type="float"),
    dict(resampler=True, interval=2, alpha_type="vector", layers=4, qk_norms=True),
    dict(resampler=False, interval=1, alpha_type="vector", added=False),
    dict(resampler=False, interval=2, alpha_type="float", layers=4),
]


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (30 + 7 * i, 41, 3), dtype=np.uint8)) for i in range(n)]


def batch(processor):
    """Row 0: two images interleaved with text; row 1: one image, left-padded to row 0's length."""
    a, b, c = images(3)
    prompts = [
        ["User: ", a, "describe it . ", b, "what is in the picture ? ", "Assistant: "],
        ["User: ", c, "hello ", "Assistant: "],
    ]
    return dict(processor(text=prompts, return_tensors="pt"))


def build(tmp_path, **kw):
    hf, processor = idefics_folder(tmp_path, **kw)
    return hf, vislang.load(tmp_path), processor


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()))
def test_logits_and_greedy_match(tmp_path, variant):
    hf, vl, processor = build(tmp_path, **variant)
    inputs = batch(processor)
    mask = inputs["attention_mask"]
    assert mask[1, 0] == 0 and inputs["pixel_values"].shape[:2] == (2, 2)
    with torch.no_grad():
        theirs = hf(**inputs).logits
    ours = vl(**inputs).logits
    assert max_diff_real(theirs, ours, mask) <= 1e-4
    # the images matter: without them the logits move
    assert max_diff_real(theirs, vl(inputs["input_ids"], mask).logits, mask) > 1e-2
    # vislang builds the same media mask from the <image> tokens
    built = {k: v for k, v in inputs.items() if k != "image_attention_mask"}
    assert max_diff_real(theirs, vl(**built).logits, mask) <= 1e-4

    gen = hf.generation_config
    a = hf.generate(**inputs, max_new_tokens=16, do_sample=False)[:, mask.shape[1] :]
    b = vl.generate(max_new_tokens=16, eos_token_id=gen.eos_token_id, pad_token_id=gen.pad_token_id, **built)
    assert a.shape == b.shape and a.shape[1] >= 8
    assert torch.equal(a, b)


def test_cached_decoding_equals_uncached(tmp_path):
    _, vl, processor = build(tmp_path)
    inputs = batch(processor)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    full = vl(**inputs).logits
    split = ids.shape[1] - 3  # after every image token of both rows
    assert not (ids[:, split:] == IMAGE_ID).any()
    cache = vl.new_cache(2, ids.shape[1])
    first = vl(
        ids[:, :split],
        mask[:, :split],
        pixel_values=inputs["pixel_values"],
        image_attention_mask=inputs["image_attention_mask"][:, :split],
        cache=cache,
    ).logits
    # later tokens see what the prompt's last token saw, as in transformers' generate
    steps = [vl(ids[:, t : t + 1], mask[:, : t + 1], cache=cache).logits for t in range(split, ids.shape[1])]
    assert max_diff_real(full, torch.cat([first, *steps], 1), mask) <= 1e-5


def _text_only_llama(hf):
    c = hf.config
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=c.vocab_size,
            hidden_size=c.hidden_size,
            intermediate_size=c.intermediate_size,
            num_hidden_layers=c.num_hidden_layers,
            num_attention_heads=c.num_attention_heads,
            rms_norm_eps=c.rms_norm_eps,
            max_position_embeddings=c.max_position_embeddings,
        )
    ).eval()
    missing, _ = llama.load_state_dict(hf.state_dict(), strict=False)
    assert not missing
    return llama


def test_zero_alphas_give_the_language_model(tmp_path):
    hf, _, processor = build(tmp_path, resampler=True, interval=1, added=False)
    with torch.no_grad():
        for layer in hf.model.gated_cross_attn_layers:
            layer.alpha_cross_attn.zero_()
            layer.alpha_dense.zero_()
    hf.save_pretrained(tmp_path)
    vl = vislang.load(tmp_path)
    inputs = batch(processor)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        theirs = hf(**inputs).logits
        theirs_lm = _text_only_llama(hf)(input_ids=ids, attention_mask=mask).logits
    ours = vl(**inputs).logits
    ours_lm = vl.language_model(ids, attention_mask=mask)
    assert max_diff_real(theirs, theirs_lm, mask) <= 1e-5
    assert max_diff_real(ours, ours_lm, mask) <= 1e-5
    assert max_diff_real(ours_lm, theirs_lm, mask) <= 1e-4


def test_text_only_rows_match(tmp_path):
    """No image anywhere: transformers runs zero pixels that no token sees; vislang skips the tower."""
    hf, vl, processor = build(tmp_path, alpha_type="vector")
    inputs = dict(processor(text=[["User: what is in the picture ? "], ["hello ."]], return_tensors="pt"))
    assert not inputs["image_attention_mask"].any()
    with torch.no_grad():
        theirs = hf(**inputs).logits
    ours = vl(inputs["input_ids"], inputs["attention_mask"]).logits
    assert max_diff_real(theirs, ours, inputs["attention_mask"]) <= 1e-4


def test_save_round_trip(tmp_path):
    hf, vl, processor = build(tmp_path / "a", resampler=True, interval=2, layers=4, alpha_type="vector")
    vl.save_pretrained(tmp_path / "b")
    inputs = batch(processor)
    with torch.no_grad():
        before = hf(**inputs).logits
        after = IdeficsForVisionText2Text.from_pretrained(tmp_path / "b").eval()(**inputs).logits
    assert max_diff_real(before, after, inputs["attention_mask"]) == 0
    again = vislang.load(tmp_path / "b")
    assert max_diff_real(before, again(**inputs).logits, inputs["attention_mask"]) <= 1e-4
    assert again.cfg == vl.cfg


def test_chat_runs(tmp_path):
    _, vl, _ = build(tmp_path)
    reply = vl.chat([{"role": "user", "content": "hello"}], max_new_tokens=4)
    assert reply.usage["completion_tokens"] >= 1
    two = [
        [{"role": "user", "content": [{"type": "image", "image": im}, {"type": "text", "text": "a"}]}]
        for im in images(2)
    ]
    two[1][0]["content"].insert(0, {"type": "image", "image": images(1, seed=3)[0]})
    replies = vl.chat_batch(two, max_new_tokens=4)
    assert len(replies) == 2
    ids, _ = vl.build_prompt(two[1])
    assert ids.count(IMAGE_ID) == 2


def test_media_locations_golden():
    I, E = 9, 2  # noqa: E741 (image token, end of document)
    ids = torch.tensor([[5, 6, I, 7, I, 8, E, 6, I, 7, 0]])
    got = media_locations(ids, I, num_images=2, eod_token_id=E)[0].long()
    want = [
        [0, 0],  # text before any image sees none
        [0, 0],
        [1, 0],  # the image token sees its own image
        [1, 0],
        [0, 1],  # only the latest image
        [0, 1],
        [0, 1],  # the end-of-document token itself still sees it
        [0, 0],  # after it: none until the next image
        [0, 0],  # a third image beyond num_images=2 is seen by nobody
        [0, 0],
        [0, 0],
    ]
    assert got.tolist() == want


def test_media_locations_match_the_processor(tmp_path):
    _, _, processor = build(tmp_path)
    inputs = batch(processor)
    got = media_locations(inputs["input_ids"], IMAGE_ID, 2, eod_token_id=2)
    assert torch.equal(got, inputs["image_attention_mask"].bool())


def test_preprocessing_is_bit_identical():
    theirs = IdeficsImageProcessorPil(image_size=SIZE)
    ours = idefics_image_transform(theirs.to_dict())
    pics = images(3, seed=1) + [Image.new("RGB", (5, 90), (200, 10, 30))]
    expected = theirs(pics, return_tensors="pt")  # IDEFICS returns the pixel tensor itself
    assert torch.equal(ours.batch(pics), expected)
