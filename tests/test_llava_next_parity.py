"""LLaVA-NeXT against transformers: images of different aspect ratios in one batch, through
transformers' PIL image processor; feature counts, logits and greedy tokens."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from parity import greedy_pair, max_diff_real, prompt_batch, save_and_load
from tiny import IMAGE_TOKEN, TEXT, VISION

PINPOINTS = [[28, 56], [56, 28], [56, 56], [28, 84], [84, 28]]
SIZES = [(40, 90), (100, 37), (30, 30), (13, 200), (57, 56)]  # (height, width)


def images(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def processor():
    side = VISION["image_size"]
    return LlavaNextImageProcessorPil(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        image_grid_pinpoints=PINPOINTS,
    )


def build(tmp_path, text="llama_gqa", layer=-2):
    cfg = LlavaNextConfig(
        text_config=TEXT[text],
        vision_config=VISION,
        image_token_index=IMAGE_TOKEN,
        image_grid_pinpoints=PINPOINTS,
        vision_feature_layer=layer,
    )
    return save_and_load(LlavaNextForConditionalGeneration(cfg), tmp_path)


@pytest.mark.parametrize("text,layer", [("llama_gqa", -2), ("qwen2", [0, -1]), ("smollm2_tied", -1)])
def test_mixed_aspect_ratios_match(tmp_path, text, layer):
    hf, vl = build(tmp_path, text, layer)
    inputs = dict(processor()(images(SIZES[:3]), return_tensors="pt"))
    counts = [vl.num_image_tokens(hw) for hw in inputs["image_sizes"]]
    with torch.no_grad():
        feats = hf.model.get_image_features(**inputs).pooler_output
    assert counts == [f.shape[0] for f in feats]
    ids, mask = prompt_batch(counts)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, **inputs).logits
    ours = vl(input_ids=ids, attention_mask=mask, **inputs).logits
    assert max_diff_real(theirs, ours, mask) <= 1e-4
    a, b = greedy_pair(hf, vl, ids, mask, **inputs)
    assert torch.equal(a, b)


def test_feature_counts_for_many_shapes(tmp_path):
    hf, vl = build(tmp_path)
    shapes = SIZES + [(28, 28), (29, 300), (300, 29), (56, 112), (1, 1), (500, 499)]
    inputs = dict(processor()(images(shapes), return_tensors="pt"))
    with torch.no_grad():
        feats = hf.model.get_image_features(**inputs).pooler_output
    assert [vl.num_image_tokens(hw) for hw in inputs["image_sizes"]] == [f.shape[0] for f in feats]
    with torch.no_grad():
        ours = vl.image_features(inputs["pixel_values"], inputs["image_sizes"])
    assert max(float((a - b).abs().max()) for a, b in zip(feats, ours)) <= 1e-5


def test_full_strategy_is_refused(tmp_path):
    from vislang.config import LlavaConfig
    from vislang.models import LlavaNext

    cfg = LlavaConfig.from_hf(
        {
            "model_type": "llava_next",
            "vision_feature_select_strategy": "full",
            "text_config": TEXT["llama_gqa"],
            "vision_config": VISION,
        }
    )
    with pytest.raises(ValueError, match="default"):
        LlavaNext(cfg)


def test_chat_prompt_equals_llava_next_processor(tmp_path):
    from transformers.models.llava_next.processing_llava_next import LlavaNextProcessor

    import vislang
    from tiny import TEMPLATE, tokenizer_dir

    hf, _ = build(tmp_path)
    fast = tokenizer_dir(tmp_path)
    processor().save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").write_text(TEMPLATE)
    vl = vislang.load(tmp_path)
    theirs_proc = LlavaNextProcessor(
        image_processor=processor(),
        tokenizer=fast,
        patch_size=VISION["patch_size"],
        vision_feature_select_strategy="default",
        chat_template=TEMPLATE,
        num_additional_image_tokens=1,
    )
    pics = images([(40, 90), (100, 37)])
    msg = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": pics[0]},
                {"type": "image", "image": pics[1]},
                {"type": "text", "text": "describe it ."},
            ],
        }
    ]
    text = theirs_proc.apply_chat_template(msg, add_generation_prompt=True, tokenize=False)
    theirs = theirs_proc(images=pics, text=text, return_tensors="pt")
    ids, inputs = vl.build_prompt(msg)
    assert ids == theirs["input_ids"][0].tolist()
    assert torch.equal(inputs["image_sizes"], theirs["image_sizes"])
    assert float((inputs["pixel_values"] - theirs["pixel_values"]).abs().max()) <= 1e-6
    reply = vl.chat(msg, max_new_tokens=8)
    out = hf.generate(**theirs, max_new_tokens=8, do_sample=False)[0, theirs["input_ids"].shape[1] :].tolist()
    assert reply.token_ids == (out[: out.index(2)] if 2 in out else out)
