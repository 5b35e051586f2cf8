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


# BLIP-2's Q-Former (a BERT encoder): the cross-attention names first, since "attention.attention"
# is also a part of "crossattention.attention"
_QFORMER_LAYER = [
    ("crossattention.attention.query.", "cross_attn.q_proj."),
    ("crossattention.attention.key.", "cross_attn.k_proj."),
    ("crossattention.attention.value.", "cross_attn.v_proj."),
    ("crossattention.output.dense.", "cross_attn.o_proj."),
    ("crossattention.output.LayerNorm.", "cross_attn.norm."),
    ("attention.attention.query.", "self_attn.q_proj."),
    ("attention.attention.key.", "self_attn.k_proj."),
    ("attention.attention.value.", "self_attn.v_proj."),
    ("attention.output.dense.", "self_attn.o_proj."),
    ("attention.output.LayerNorm.", "self_attn.norm."),
    ("intermediate_query.dense.", "query_ffn.mlp.fc1."),
    ("output_query.dense.", "query_ffn.mlp.fc2."),
    ("output_query.LayerNorm.", "query_ffn.norm."),
    ("intermediate.dense.", "text_ffn.mlp.fc1."),
    ("output.dense.", "text_ffn.mlp.fc2."),
    ("output.LayerNorm.", "text_ffn.norm."),
]

# OPT's decoder, under OPTForCausalLM's model.decoder
_OPT = [
    ("layers.*.self_attn.out_proj.", "layers.*.self_attn.o_proj."),
    ("layers.*.fc1.", "layers.*.mlp.fc1."),
    ("layers.*.fc2.", "layers.*.mlp.fc2."),
    ("layers.", "layers."),
    ("embed_tokens.", "embed_tokens."),
    ("embed_positions.", "embed_positions."),
    ("project_in.", "project_in."),
    ("project_out.", "project_out."),
    ("final_layer_norm.", "norm."),
]


def _blip2_rules(instruct: bool, language_model: str) -> list[tuple[str, str]]:
    """BLIP-2 and InstructBLIP, one layout in memory and on disk (transformers 4 and 5 alike):
    vision_model, query_tokens, qformer, language_projection, and the language model's own
    ForCausalLM names under language_model (OPT's or a Llama-family decoder's). InstructBLIP's
    Q-Former has BERT embeddings for the instruction, whose LayerNorm also norms the queries."""
    if instruct:
        embeddings = [
            ("qformer.embeddings.layernorm.", "qformer.embed_norm."),
            ("qformer.embeddings.word_embeddings.", "qformer.word_embeddings."),
            ("qformer.embeddings.position_embeddings.", "qformer.position_embeddings."),
        ]
    else:
        embeddings = [("qformer.layernorm.", "qformer.embed_norm.")]
    rules = [
        ("vision_model.embeddings.", "vision.embeddings."),
        ("vision_model.encoder.layers.*.layer_norm1.", "vision.layers.*.norm1."),
        ("vision_model.encoder.layers.*.layer_norm2.", "vision.layers.*.norm2."),
        ("vision_model.encoder.layers.*.self_attn.projection.", "vision.layers.*.attn.o_proj."),
        ("vision_model.encoder.layers.*.self_attn.qkv.", "vision.layers.*.attn.qkv."),
        ("vision_model.encoder.layers.*.mlp.", "vision.layers.*.mlp."),
        ("vision_model.post_layernorm.", "vision.post_norm."),
        ("query_tokens", "qformer.query_tokens"),
        *_mount("qformer.encoder.layer.*.", "qformer.layers.*.", _QFORMER_LAYER),
        *embeddings,
        ("language_projection.", "language_projection."),
        ("language_model.lm_head.", "language_model.lm_head."),
    ]
    if language_model == "opt":
        return rules + _mount("language_model.model.decoder.", "language_model.", _OPT)
    return rules + _mount("language_model.model.", "language_model.", _DECODER)


RULES = {
    "blip-2:llama": _blip2_rules(False, "llama"),
    "blip-2:opt": _blip2_rules(False, "opt"),
    "instructblip:llama": _blip2_rules(True, "llama"),
    "instructblip:opt": _blip2_rules(True, "opt"),
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
