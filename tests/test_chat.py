"""model.chat end to end on a tiny LLaVA with a real tokenizer folder: the prompt equals what
transformers' LlavaProcessor builds, and the reply equals transformers' greedy generation."""

import numpy as np
import pytest
from PIL import Image

import vislang
from tiny import IMAGE_TOKEN, llava_folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = tmp_path_factory.mktemp("llava_chat")
    hf, processor = llava_folder(path)
    return hf, vislang.load(path), processor, path


def picture(seed=0, size=(40, 33)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


def conversation(image):
    return [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "text", "text": "what is in the picture ?"},
            ],
        }
    ]


def test_prompt_equals_llava_processor(setup):
    hf, vl, processor, _ = setup
    image = picture()
    text = processor.apply_chat_template(conversation(image), add_generation_prompt=True, tokenize=False)
    theirs = processor(images=[image], text=text, return_tensors="pt")
    ids, inputs = vl.build_prompt(conversation(image))
    assert ids == theirs["input_ids"][0].tolist()
    assert ids.count(IMAGE_TOKEN) == 16
    assert float((inputs["pixel_values"] - theirs["pixel_values"]).abs().max()) <= 1e-6


def test_chat_reply_equals_transformers_generate(setup):
    hf, vl, processor, path = setup
    image = picture(1)
    text = processor.apply_chat_template(conversation(image), add_generation_prompt=True, tokenize=False)
    inputs = processor(images=[image], text=text, return_tensors="pt")
    out = hf.generate(**inputs, max_new_tokens=12, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    out = out.tolist()
    if 2 in out:
        out = out[: out.index(2)]
    reply = vl.chat(conversation(str(_save(image, path / "pic.png"))), max_new_tokens=12)
    assert reply.token_ids == out
    assert str(reply) == processor.tokenizer.decode(out, skip_special_tokens=True).strip()
    assert reply.usage["prompt_tokens"] == inputs["input_ids"].shape[1]
    assert 1 <= reply.usage["completion_tokens"] <= 12


def _save(image, path):
    image.save(path)
    return path


def test_seeded_sampling_repeats(setup):
    _, vl, _, _ = setup
    a = vl.chat(conversation(picture()), max_new_tokens=8, do_sample=True, temperature=1.5, seed=3)
    b = vl.chat(conversation(picture()), max_new_tokens=8, do_sample=True, temperature=1.5, seed=3)
    c = vl.chat(conversation(picture()), max_new_tokens=8, do_sample=True, temperature=1.5, seed=4)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids or len(a.token_ids) < 3


def test_two_images_one_placeholder_each(setup):
    _, vl, _, _ = setup
    msg = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": picture(0)},
                {"type": "image", "image": picture(1)},
                {"type": "text", "text": "describe it ."},
            ],
        }
    ]
    ids, inputs = vl.build_prompt(msg)
    assert ids.count(IMAGE_TOKEN) == 32 and inputs["pixel_values"].shape == (2, 3, 28, 28)


def test_prompt_longer_than_context(setup):
    _, vl, _, _ = setup
    long = [{"role": "user", "content": "hello " * 300}]
    with pytest.raises(vislang.PromptTooLongError, match="256-token context"):
        vl.chat(long, max_new_tokens=4)


def test_corrupt_image_in_chat(setup):
    _, vl, _, _ = setup
    with pytest.raises(vislang.ImageError):
        vl.chat(conversation(b"\x89PNG\r\n\x1a\n garbage"), max_new_tokens=2)


def test_chat_batch_equals_one_by_one(setup):
    _, vl, _, _ = setup
    convs = [conversation(picture(i, size=(30 + 7 * i, 40))) for i in range(3)]
    convs.append([{"role": "user", "content": "hello"}])  # a row without an image, shorter prompt
    batched = vl.chat_batch(convs, max_new_tokens=8)
    single = [vl.chat(c, max_new_tokens=8) for c in convs]
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]
    assert [r.usage for r in batched] == [r.usage for r in single]
