"""The default model's wiring on the real towers (MobileNetV2 + SmolLM2 from their packages)."""

import pytest
import torch
from PIL import Image

from vislang.data.world import generate_sample
from vislang.models.default import load_default, merge_grid


@pytest.fixture(scope="module")
def model():
    return load_default(trained=False)


def test_merge_grid_keeps_every_cell():
    grid = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(1, 2, 3, 3)  # C=2, 3x3
    tokens = merge_grid(grid, 2)
    assert tokens.shape == (1, 4, 8)  # 3x3 padded to 4x4 -> 2x2 tokens of 2*2*2 values
    # token 0 holds cells (0,0) (0,1) (1,0) (1,1), channels last
    assert tokens[0, 0].tolist() == [0, 9, 1, 10, 3, 12, 4, 13]
    assert tokens[0, 3].tolist() == [8, 17, 0, 0, 0, 0, 0, 0]  # the bottom-right cell and zero padding
    assert merge_grid(grid, 1).shape == (1, 9, 2)


def test_image_becomes_16_tokens(model):
    image = generate_sample("scene", "test", 0, 0).images[0]
    ids, inputs = model.build_prompt(
        [
            {
                "role": "user",
                "content": [{"type": "image", "image": image}, {"type": "text", "text": "What is it?"}],
            }
        ]
    )
    assert ids.count(model.image_token_id) == 16
    assert inputs["pixel_values"].shape == (1, 3, 224, 224)
    feats = model.image_features(inputs["pixel_values"])
    assert feats[0].shape == (16, 576)


def test_text_only_chat_is_the_language_model_unchanged(model):
    """Without an image the prompt holds no image token: answers are SmolLM2's own."""
    reply = model.chat([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=16)
    assert "Paris" in str(reply)
    ids, _ = model.build_prompt([{"role": "user", "content": "What is the capital of France?"}])
    plain = model.language_model(torch.tensor([ids]))[0, -1].argmax().item()
    assert reply.token_ids[0] == plain


def asked(sample):
    """The sample's question about its image, as one user message."""
    content = [{"type": "image", "image": sample.images[0]}, {"type": "text", "text": sample.question}]
    return [{"role": "user", "content": content}]


def test_training_batch_labels_only_the_answer(model):
    sample = generate_sample("scene", "train", 0, 3)
    msgs = asked(sample)
    batch = model.training_batch([(msgs, sample.answer), ([{"role": "user", "content": "Hi"}], "Hello!")])
    labels = batch["labels"]
    answer = model.tokenizer.encode(sample.answer, add_special_tokens=False) + [model.tokenizer.eos_token_id]
    assert labels[0][labels[0] != -100].tolist() == answer
    assert batch["pixel_values"].shape[0] == 1  # the text-only row has no image
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()  # right padding
    assert batch["attention_mask"][1, -1] == 0 and labels[1, -1] == -100


def test_only_the_projector_learns(model):
    sample = generate_sample("scene", "train", 0, 4)
    msgs = asked(sample)
    model.train()
    for p in model.language_model.parameters():
        p.requires_grad_(False)
    loss = model(**model.training_batch([(msgs, sample.answer)])).loss
    loss.backward()
    model.eval()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projector.parameters())
    assert all(p.grad is None for p in model.vision.parameters())
    assert all(p.grad is None for p in model.language_model.parameters())
    model.zero_grad(set_to_none=True)


def test_trained_weights_round_trip(model, tmp_path):
    model.save_trained(tmp_path)
    other = load_default(tmp_path)
    for k, v in model.trainable_state().items():
        assert torch.allclose(other.trainable_state()[k], v.to(torch.bfloat16).float())
    assert (tmp_path / "projector.safetensors").stat().st_size < 10 * 2**20


def test_grey_picture_and_tiny_picture_work(model):
    for image in (Image.new("L", (30, 500), 128), Image.new("RGB", (1, 1))):
        reply = model.chat(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "image": image},
                        {"type": "text", "text": "Describe the image."},
                    ],
                }
            ],
            max_new_tokens=4,
        )
        assert reply.usage["completion_tokens"] >= 1
