"""SigLIP against transformers: image and text features, sigmoid logits, the image transform,
fixed-length text padding, and saving back to a folder transformers loads."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import SiglipModel
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

import vislang
from siglip_tiny import CONTEXT, IMAGE, siglip_config, siglip_folder

WORDS = [
    "a red circle",
    "blue square",
    "what is in the picture ? describe it . hello a red circle blue square",
]


def max_diff(a, b) -> float:
    return float((a - b).abs().max())


def pictures():
    rng = np.random.default_rng(0)
    sizes = [(30, 50), (64, 20), (28, 28), (100, 77)]  # (height, width): wide, tall, exact, large
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("siglip")
    hf, tok, images = siglip_folder(path)
    return path, hf, tok, images, vislang.load(path)


def test_features_and_logits_match(tiny):
    _, hf, tok, _, vl = tiny
    batch = tok(WORDS, padding="max_length", max_length=CONTEXT, truncation=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == (3, CONTEXT) and not bool(mask.all())  # padded, and the long text truncated
    pixels = torch.randn(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        image = hf.get_image_features(pixel_values=pixels).pooler_output
        assert max_diff(image, vl.get_image_features(pixels)) <= 1e-4
        # with the tokenizer's mask (as transformers' processor returns it) and without (as SigLIP trained)
        for m in (mask, None):
            text = hf.get_text_features(input_ids=ids, attention_mask=m).pooler_output
            assert max_diff(text, vl.get_text_features(ids, m)) <= 1e-4
            theirs = hf(input_ids=ids, attention_mask=m, pixel_values=pixels)
            ours = vl(input_ids=ids, attention_mask=m, pixel_values=pixels)
            assert ours.logits_per_image.shape == (2, 3)
            assert max_diff(theirs.logits_per_image, ours.logits_per_image) <= 1e-4
            assert max_diff(theirs.logits_per_text, ours.logits_per_text) <= 1e-4
            assert max_diff(theirs.image_embeds, ours.image_embeds) <= 1e-4
            assert max_diff(theirs.text_embeds, ours.text_embeds) <= 1e-4
        masked = vl.get_text_features(ids, mask)
        assert max_diff(masked, vl.get_text_features(ids)) > 1e-3  # the mask is not silently ignored


def test_image_transform_matches_pil_processor(tiny):
    """The loaded folder's transform (square resize, no crop, mean/std 0.5) equals transformers'
    torchvision-free SigLIP processor, and so does one built from the processor's defaults (224)."""
    path, hf, _, images, vl = tiny
    pics = pictures()
    theirs = images(pics, return_tensors="pt")["pixel_values"]
    ours = vl.image_transform.batch(pics)
    assert ours.shape == (4, 3, IMAGE, IMAGE)
    assert max_diff(theirs, ours) <= 1e-5
    default = SiglipImageProcessorPil()  # 224 x 224, as the released checkpoints use
    hf.save_pretrained(path / "default")
    default.save_pretrained(path / "default")
    transform = vislang.load(path / "default").image_transform
    assert max_diff(default(pics, return_tensors="pt")["pixel_values"], transform.batch(pics)) <= 1e-5


def test_embed_pads_like_the_processor(tiny):
    """embed() pads every text to the context length with </s> (truncating the long one, its </s> kept)
    and passes no mask; the result equals transformers' features of the processor's padded ids."""
    _, hf, tok, images, vl = tiny
    batch = tok(WORDS, padding="max_length", max_length=CONTEXT, truncation=True, return_tensors="pt")
    assert torch.equal(vl.pad_texts(WORDS), batch["input_ids"])
    pics = pictures()
    out = vl.embed(images=pics, texts=WORDS)
    with torch.no_grad():
        text = hf.get_text_features(input_ids=batch["input_ids"]).pooler_output
        image = hf.get_image_features(**images(pics, return_tensors="pt")).pooler_output
    assert max_diff(out["text_embeds"], F.normalize(text, dim=-1)) <= 1e-4
    assert max_diff(out["image_embeds"], F.normalize(image, dim=-1)) <= 1e-4


def test_save_round_trip(tiny, tmp_path):
    """vislang's save loads in transformers with no missing or unexpected weights and the same outputs,
    and its preprocessor_config.json gives transformers' processor the same pixels."""
    _, hf, tok, _, vl = tiny
    vl.save_pretrained(tmp_path)
    back, info = SiglipModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids = tok(WORDS, padding="max_length", max_length=CONTEXT, truncation=True, return_tensors="pt")[
        "input_ids"
    ]
    pixels = torch.randn(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        assert torch.equal(
            hf(input_ids=ids, pixel_values=pixels).logits_per_image,
            back.eval()(input_ids=ids, pixel_values=pixels).logits_per_image,
        )
    pics = pictures()
    reloaded = SiglipImageProcessorPil.from_pretrained(tmp_path)
    assert max_diff(reloaded(pics, return_tensors="pt")["pixel_values"], vl.image_transform.batch(pics)) == 0
    again = vislang.load(tmp_path)
    assert again.cfg == vl.cfg


def test_config_round_trip():
    from vislang.config import SiglipConfig

    hf = siglip_config().to_dict()
    hf["vision_config"]["my_custom_key"] = 7
    cfg = SiglipConfig.from_hf(hf)
    out = cfg.to_hf()
    assert out["vision_config"]["my_custom_key"] == 7 and "projection_dim" not in out["vision_config"]
    assert out["text_config"]["projection_size"] == 32 and out["vision_config"]["vision_use_head"] is True
    assert SiglipConfig.from_hf(out) == cfg


def test_folder_without_tokenizer_or_processor(tmp_path):
    """Images still embed (square resize to the config's image_size by default); texts get a clear error."""
    hf, _, images = siglip_folder(tmp_path, tokenizer=False, image_processor=False)
    vl = vislang.load(tmp_path)
    pics = pictures()[:2]
    with torch.no_grad():
        image = hf.get_image_features(**images(pics, return_tensors="pt")).pooler_output
    assert max_diff(vl.embed(images=pics)["image_embeds"], F.normalize(image, dim=-1)) <= 1e-4
    with pytest.raises(vislang.CheckpointError, match="tokenizer"):
        vl.embed(texts=["a red circle"])


def test_bad_inputs_are_refused(tiny):
    from vislang.config import SiglipConfig
    from vislang.models import Siglip

    _, _, _, _, vl = tiny
    with pytest.raises(vislang.PromptTooLongError, match="longer than SigLIP's 16-token context"):
        vl.get_text_features(torch.ones(1, CONTEXT + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="patches"):
        vl.get_image_features(torch.randn(1, 3, 35, 35))
    cfg = SiglipConfig.from_hf(siglip_config(vision_use_head=False).to_dict())
    with pytest.raises(ValueError, match="vision_use_head"):
        Siglip(cfg)
