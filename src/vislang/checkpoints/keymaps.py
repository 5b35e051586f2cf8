"""Explicit maps between Hugging Face state-dict keys and vislang's module names.

A rule pairs a Hugging Face key template with a vislang one; `*` stands for a layer number.
Rules are tried in order and the first match wins, so for each part the longer (more specific)
prefixes come first. Reading accepts every layout listed (the original llava-hf checkpoints,
transformers 5 in memory and on disk); writing uses the first rule whose vislang side matches:
the original layout, which transformers 4 and 5 both load.
"""

from __future__ import annotations

import re

# inner names of a CLIP-style encoder (vision or text tower)
_ENCODER = [
    ("pre_layrnorm.", "pre_norm."),
    ("post_layernorm.", "post_norm."),
    ("final_layer_norm.", "final_norm."),
    ("encoder.layers.*.layer_norm1.", "layers.*.norm1."),
    ("encoder.layers.*.layer_norm2.", "layers.*.norm2."),
    ("encoder.layers.*.self_attn.out_proj.", "layers.*.attn.o_proj."),
    ("encoder.layers.*.self_attn.", "layers.*.attn."),
    ("encoder.layers.*.mlp.", "layers.*.mlp."),
    ("embeddings.", "embeddings."),
]

# inner names of a Llama-family decoder match vislang's one for one
_DECODER = [
    ("embed_tokens.", "embed_tokens."),
    ("layers.", "layers."),
    ("norm.", "norm."),
]


def _mount(hf_prefix: str, vl_prefix: str, inner: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(hf_prefix + h, vl_prefix + v) for h, v in inner]


def _llava_rules(next_: bool) -> list[tuple[str, str]]:
    rules = []
    for vision_prefix in (
        "vision_tower.vision_model.",
        "model.vision_tower.vision_model.",
        "vision_tower.",
        "model.vision_tower.",
    ):
        rules += _mount(vision_prefix, "vision.", _ENCODER)
    for lm_prefix, head in (
        ("language_model.model.", "language_model.lm_head."),
        ("model.language_model.", "lm_head."),
    ):
        rules += _mount(lm_prefix, "language_model.", _DECODER)
        rules.append((head, "language_model.lm_head."))
    for proj in ("multi_modal_projector.", "model.multi_modal_projector."):
        rules.append((proj, "projector."))
    if next_:
        rules += [("image_newline", "image_newline"), ("model.image_newline", "image_newline")]
    return rules


def _clip_rules() -> list[tuple[str, str]]:
    return [
        *_mount("vision_model.", "vision.", _ENCODER),
        *_mount("text_model.", "text.", _ENCODER),
        ("visual_projection.", "visual_projection."),
        ("text_projection.", "text_projection."),
        ("logit_scale", "logit_scale"),
    ]


def _siglip_rules() -> list[tuple[str, str]]:
    """CLIP's encoder names, plus the vision tower's attention-pooling head (its attention is a
    torch.nn.MultiheadAttention: packed in_proj_weight / in_proj_bias), the text head and the bias."""
    return [
        ("vision_model.head.attention.out_proj.", "vision.head.attn.o_proj."),
        ("vision_model.head.attention.", "vision.head.attn."),
        ("vision_model.head.layernorm.", "vision.head.norm."),
        ("vision_model.head.mlp.", "vision.head.mlp."),
        ("vision_model.head.probe", "vision.head.probe"),
        *_mount("vision_model.", "vision.", _ENCODER),
        ("text_model.head.", "text.head."),
        *_mount("text_model.", "text.", _ENCODER),
        ("logit_scale", "logit_scale"),
        ("logit_bias", "logit_bias"),
    ]


def _qwen2vl_rules() -> list[tuple[str, str]]:
    """The hub's layout first (visual.*, model.*, lm_head), then transformers 5's in-memory one
    (model.visual.*, model.language_model.*). The merger lives inside `visual` in both."""
    rules = [("visual.merger.", "merger."), ("model.visual.merger.", "merger.")]
    rules += [("visual.", "vision."), ("model.visual.", "vision.")]
    rules += _mount("model.", "language_model.", _DECODER)
    rules += _mount("model.language_model.", "language_model.", _DECODER)
    rules.append(("lm_head.", "language_model.lm_head."))
    return rules


def _idefics_rules() -> list[tuple[str, str]]:
    """IDEFICS keeps everything but the head under model.*; the perceiver's blocks are (attn, mlp) pairs."""
    rules = _mount("model.vision_model.", "vision.", _ENCODER)
    rules += [
        ("model.perceiver_resampler.blocks.*.0.", "resampler.layers.*.attn."),
        ("model.perceiver_resampler.blocks.*.1.", "resampler.layers.*.mlp."),
        ("model.perceiver_resampler.", "resampler."),
        ("model.gated_cross_attn_layers.", "cross_layers."),
    ]
    rules += _mount("model.", "language_model.", _DECODER)
    rules.append(("lm_head.", "language_model.lm_head."))
    return rules


RULES = {
    "qwen2_vl": _qwen2vl_rules(),
    "qwen2_5_vl": _qwen2vl_rules(),
    "llava": _llava_rules(next_=False),
    "llava_next": _llava_rules(next_=True),
    "clip": _clip_rules(),
    "siglip": _siglip_rules(),
    "idefics": _idefics_rules(),
}

# buffers some checkpoints carry that vislang computes instead
IGNORED = re.compile(r"(^|\.)position_ids$|(^|\.)rotary_emb\.inv_freq$")


def _compile(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\*", r"(\d+)") + "(.*)$")


def _rename(key: str, rules: list[tuple[str, str]], reverse: bool) -> str | None:
    for hf, vl in rules:
        src, dst = (vl, hf) if reverse else (hf, vl)
        m = _compile(src).match(key)
        if m:
            *numbers, rest = m.groups()
            for n in numbers:
                dst = dst.replace("*", n, 1)
            return dst + rest
    return None


def hf_to_vislang(model_type: str, key: str) -> str | None:
    """The vislang name of a checkpoint key, or None when no rule knows it."""
    return _rename(key, RULES[model_type], reverse=False)


def vislang_to_hf(model_type: str, key: str) -> str:
    name = _rename(key, RULES[model_type], reverse=True)
    if name is None:
        raise KeyError(f"no Hugging Face name for vislang parameter {key!r} of a {model_type} model")
    return name
