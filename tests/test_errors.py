"""Clear errors for wrong inputs to the models."""

import pytest
import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration

import vislang
from parity import prompt_batch
from tiny import IMAGE_TOKEN, TEXT, VISION


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("llava")
    cfg = LlavaConfig(text_config=TEXT["llama_gqa"], vision_config=VISION, image_token_index=IMAGE_TOKEN)
    LlavaForConditionalGeneration(cfg).save_pretrained(path)
    return vislang.load(path)


def test_image_token_count_mismatch_names_both_numbers(model):
    ids, mask = prompt_batch([10])  # 16 features per image, only 10 placeholders
    with pytest.raises(vislang.ImageTokenMismatchError) as err:
        model(input_ids=ids, attention_mask=mask, pixel_values=torch.randn(1, 3, 28, 28))
    assert "10" in str(err.value) and "16" in str(err.value)


def test_image_tokens_without_images(model):
    ids, mask = prompt_batch([16])
    with pytest.raises(vislang.ImageTokenMismatchError, match="16 image tokens"):
        model(input_ids=ids, attention_mask=mask)


def test_wrong_image_size_is_explained(model):
    ids, mask = prompt_batch([16])
    with pytest.raises(ValueError, match="image_size"):
        model(input_ids=ids, attention_mask=mask, pixel_values=torch.randn(1, 3, 56, 56))


def test_bad_sampling_settings(model):
    ids = torch.randint(6, 100, (1, 4))
    with pytest.raises(ValueError, match="temperature"):
        model.generate(ids, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(ids, do_sample=True, top_p=0.0)
