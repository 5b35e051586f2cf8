"""BLIP-2 and InstructBLIP against transformers: inputs made by vislang's own processing equal the
transformers processors' (image tokens before BOS and before the padding), logits within 1e-4,
identical greedy tokens, the instruction reaching InstructBLIP's Q-Former, checkpoints both ways."""

import pytest
import torch
from transformers import AutoTokenizer, Blip2ForConditionalGeneration, InstructBlipForConditionalGeneration
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

import vislang
from blip2_tiny import BOS, IMAGE_TOKEN, QUERIES, SIZE, blip2_folder, hf_config, picture
from parity import max_diff_real
from vislang.processing.blip import blip_image_transform

# (InstructBLIP?, language model, seed): seeds whose greedy answers are not one repeated token
VARIANTS = [
    (False, "llama", 1),
    (False, "smollm2_tied", 3),
    (True, "llama", 2),
    (False, "opt", 5),
    (True, "opt", 4),
]
TEXTS = ["Question: what is in the picture ? Answer:", "describe it ."]


@pytest.fixture(autouse=True)
def _one_thread():
    """Models this small run faster on one thread than on two that wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def variant_id(v):
    return f"{'instructblip' if v[0] else 'blip2'}-{v[1]}"


def build(path, instruct, text, seed=0):
    hf, processor = blip2_folder(path, instruct, text, seed)
    return hf, vislang.load(path), processor


def batch(processor, texts=TEXTS):
    images = [picture(0), picture(1, (50, 20))]
    return dict(processor(images=images, text=texts, padding=True, return_tensors="pt")), images


def hf_logits(hf, inputs):
    """transformers' forward with the positions its generate uses (counting real tokens), which
    vislang always uses: the processors leave padding between the image tokens and the text."""
    positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return hf(**inputs, position_ids=positions).logits


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_logits_and_greedy_match(tmp_path, variant):
    instruct, text, seed = variant
    hf, vl, processor = build(tmp_path, instruct, text, seed)
    theirs, images = batch(processor)
    ours = vl.processor_inputs(TEXTS, images)
    assert sorted(ours) == sorted(theirs)
    for k in theirs:
        if k == "pixel_values":
            assert float((ours[k] - theirs[k]).abs().max()) <= 1e-6
        else:
            assert torch.equal(ours[k], theirs[k]), k
    ids, mask = ours["input_ids"], ours["attention_mask"]
    # row 1 is left-padded: image tokens, padding, then BOS and the text
    assert ids[:, :QUERIES].eq(IMAGE_TOKEN).all() and mask[:, :QUERIES].all()
    assert mask[1, QUERIES] == 0 and ids[0, QUERIES] == BOS

    theirs_logits = hf_logits(hf, theirs)
    assert max_diff_real(theirs_logits, vl(**ours).logits, mask) <= 1e-4
    # the image matters: other pixels move the logits
    other = {**ours, "pixel_values": ours["pixel_values"].flip(-1)}
    assert max_diff_real(theirs_logits, vl(**other).logits, mask) > 1e-2

    gen = hf.generation_config
    a = hf.generate(**theirs, max_new_tokens=16, do_sample=False)[:, ids.shape[1] :]
    b = vl.generate(**ours, max_new_tokens=16, eos_token_id=gen.eos_token_id, pad_token_id=gen.pad_token_id)
    assert a.shape == b.shape and a.shape[1] >= 8
    assert torch.equal(a, b)
    assert len(set(a.flatten().tolist())) >= 4


def test_instruction_reaches_the_qformer(tmp_path):
    hf, vl, processor = build(tmp_path, True, "llama", 2)
    inputs, _ = batch(processor)
    asked, _ = batch(processor, ["hello .", "what is a blue square ?"])
    # the language model's prompt stays; only what the Q-Former reads changes
    other = {**inputs, "qformer_input_ids": asked["qformer_input_ids"]}
    other["qformer_attention_mask"] = asked["qformer_attention_mask"]
    mask = inputs["attention_mask"]
    before, after = vl(**inputs).logits, vl(**other).logits
    assert max_diff_real(before, after, mask) > 1e-2
    assert max_diff_real(hf_logits(hf, other), after, mask) <= 1e-4
    with pytest.raises(vislang.errors.VislangError, match="qformer_input_ids"):
        vl(inputs["input_ids"], mask, pixel_values=inputs["pixel_values"])


def test_loss_with_labels_matches(tmp_path):
    hf, vl, processor = build(tmp_path, False, "llama", 1)
    inputs, _ = batch(processor)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    labels[:, : QUERIES + 2] = -100
    positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        theirs = hf(**inputs, labels=labels, position_ids=positions).loss
        ours = vl(**inputs, labels=labels).loss
    assert abs(float(theirs) - float(ours)) <= 1e-5


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_save_round_trip(tmp_path, variant):
    """vislang's folder loads in transformers with no missing or unexpected weight, and back."""
    instruct, text, seed = variant
    hf, vl, processor = build(tmp_path / "a", instruct, text, seed)
    vl.save_pretrained(tmp_path / "b")
    cls = InstructBlipForConditionalGeneration if instruct else Blip2ForConditionalGeneration
    again_hf, info = cls.from_pretrained(tmp_path / "b", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    inputs, _ = batch(processor)
    mask = inputs["attention_mask"]
    assert max_diff_real(hf_logits(hf, inputs), hf_logits(again_hf.eval(), inputs), mask) == 0
    again = vislang.load(tmp_path / "b")
    assert again.cfg == vl.cfg
    assert max_diff_real(vl(**inputs).logits, again(**inputs).logits, mask) == 0
    if instruct:  # the Q-Former's tokenizer travels in its subfolder
        qtok = AutoTokenizer.from_pretrained(tmp_path / "b" / "qformer_tokenizer")
        assert qtok(TEXTS)["input_ids"] == processor.qformer_tokenizer(TEXTS)["input_ids"]


@pytest.mark.parametrize("instruct", [False, True], ids=["blip2", "instructblip"])
def test_chat_prompt_is_what_the_processor_makes(tmp_path, instruct):
    """A chat turn becomes the processor's inputs for its prompt (BLIP-2: the VQA format), and the
    answer is transformers' greedy answer to them."""
    hf, vl, processor = build(tmp_path, instruct, "llama", 2 if instruct else 1)
    image, question = picture(3), "what is in the picture ?"
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}
    ]
    prompt = question if instruct else f"Question: {question} Answer:"
    theirs = processor(images=[image], text=[prompt], return_tensors="pt")
    ids, inputs = vl.build_prompt(messages)
    assert ids == theirs["input_ids"][0].tolist()
    assert ids[: QUERIES + 1] == [IMAGE_TOKEN] * QUERIES + [BOS]
    assert float((inputs["pixel_values"] - theirs["pixel_values"]).abs().max()) <= 1e-6
    if instruct:
        assert torch.equal(inputs["qformer_input_ids"], theirs["qformer_input_ids"])
    want = hf.generate(**theirs, max_new_tokens=8, do_sample=False)[0, len(ids) :].tolist()
    got = vl.chat(messages, max_new_tokens=8).token_ids
    assert got == want[: len(got)] and len(got) >= 1
    if not instruct:  # an image alone is the captioning prompt: image tokens and BOS
        ids, _ = vl.build_prompt([{"role": "user", "content": [{"type": "image", "image": image}]}])
        assert ids == processor(images=[image], text=[""])["input_ids"][0]


def test_image_processing_matches_transformers():
    pics = [picture(5), picture(6, (90, 17)), picture(7, (384, 500))]
    for settings in ({"size": {"height": SIZE, "width": SIZE}}, {}):
        theirs = BlipImageProcessorPil(**settings)
        ours = blip_image_transform(theirs.to_dict(), image_size=SIZE)
        expected = theirs(pics, return_tensors="pt")["pixel_values"]
        got = ours.batch(pics)
        assert got.shape == expected.shape
        assert float((got - expected).abs().max()) <= 1e-6
    # a preprocessor_config.json that names only what differs from the defaults
    assert tuple(blip_image_transform({}, image_size=SIZE).batch(pics[:1]).shape) == (1, 3, SIZE, SIZE)


def test_narrower_word_embeddings_are_refused():
    """OPT-350m's 512-wide embeddings under 1024-wide blocks: a query output cannot replace a token
    embedding (transformers' masked_scatter would silently cut it into pieces)."""
    from vislang.config_blip2 import Blip2Config
    from vislang.errors import UnsupportedModelError
    from vislang.models import Blip2

    cfg = Blip2Config.from_hf(hf_config(False, "opt_projected").to_dict())
    with pytest.raises(UnsupportedModelError, match="word_embed_proj_dim"):
        Blip2(cfg)
