"""Dataclass configs for every part, read from and written to Hugging Face config.json dicts.

Field names follow the Hugging Face names so a reader can check one against the other.
Keys a config does not use are kept in `extra` and written back, so a round trip loses nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar


def _split(cls, d: dict, skip: tuple = ()) -> tuple[dict, dict]:
    """Split a dict into the keys `cls` declares and the rest."""
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    known = {k: v for k, v in d.items() if k in names and k not in skip}
    extra = {k: v for k, v in d.items() if k not in names and k not in skip}
    return known, extra


def _plain(cfg) -> dict:
    out = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "extra"}
    return {**cfg.extra, **out}


QWEN_TEXT_TYPES = ("qwen2", "qwen2_vl_text", "qwen2_5_vl_text")


@dataclass
class TextConfig:
    """A Llama-family decoder: Llama, Mistral, Qwen2, SmolLM2."""

    model_type: str = "llama"
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # {"rope_type": "linear", "factor": 2.0}, ...
    attention_bias: bool = False  # Llama: bias on q, k, v and o
    mlp_bias: bool = False
    sliding_window: int | None = None  # Mistral
    mrope_section: list[int] | None = None  # Qwen2-VL: rotary pairs given to the t, h, w axes
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.num_key_value_heads = self.num_key_value_heads or self.num_attention_heads
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def is_qwen(self) -> bool:
        return self.model_type in QWEN_TEXT_TYPES

    @property
    def qkv_bias(self) -> bool:
        return self.attention_bias or self.is_qwen

    @property
    def o_bias(self) -> bool:
        return self.attention_bias and not self.is_qwen

    @property
    def window(self) -> int | None:
        if self.is_qwen:
            return None  # checked in from_hf: only full attention is supported
        return self.sliding_window

    @classmethod
    def from_hf(cls, d: dict) -> TextConfig:
        d = dict(d)
        # transformers 5 keeps theta and scaling in one dict; older configs split them
        rope = d.pop("rope_parameters", None)
        if rope is None and d.get("rope_scaling"):
            rope = d.pop("rope_scaling")  # the legacy flat form, e.g. Qwen2-VL's {"type": "mrope", ...}
        if rope is not None:
            rope = dict(rope)
            d["rope_theta"] = rope.pop("rope_theta", d.get("rope_theta", 10000.0))
            if "mrope_section" in rope:
                d["mrope_section"] = list(rope.pop("mrope_section"))
            kind = rope.pop("type", None) or rope.get("rope_type", "default")
            # "mrope" is the default frequencies with sections per axis (transformers 5 says "default")
            kind = "default" if kind == "mrope" else kind
            rope = {**rope, "rope_type": kind}
            d["rope_scaling"] = rope if kind != "default" else None
        if d.get("model_type") in QWEN_TEXT_TYPES and d.get("use_sliding_window"):
            raise NotImplementedError("Qwen2 with use_sliding_window=true is not supported yet")
        known, extra = _split(cls, d)
        return cls(**known, extra=extra)

    def to_hf(self) -> dict:
        d = _plain(self)
        theta, scaling, sections = d.pop("rope_theta"), d.pop("rope_scaling"), d.pop("mrope_section")
        d["rope_parameters"] = {"rope_type": "default", **(scaling or {}), "rope_theta": theta}
        if sections is not None:
            d["rope_parameters"]["mrope_section"] = list(sections)
        if self.is_qwen:
            d.pop("attention_bias")
            d.pop("mlp_bias")
        return d


@dataclass
class VisionConfig:
    """A CLIP-style ViT."""

    model_type: str = "clip_vision_model"
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    projection_dim: int = 512
    extra: dict = field(default_factory=dict)

    # CLIP's layout: a class token, a bias-free patch conv, a LayerNorm before the blocks, pooled at
    # the class token. SigLIP's tower (SiglipVisionConfig) changes all four.
    class_token: ClassVar[bool] = True
    patch_bias: ClassVar[bool] = False
    pre_norm: ClassVar[bool] = True

    @property
    def pooling(self) -> str:
        """How the tower pools: "cls" (the class token), "head" (attention pooling) or "none"."""
        return "cls"

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_hf(cls, d: dict) -> VisionConfig:
        known, extra = _split(cls, d)
        return cls(**known, extra=extra)

    def to_hf(self) -> dict:
        return _plain(self)


@dataclass
class ClipTextConfig:
    """CLIP's text tower: a causal pre-LN transformer with learned positions, pooled at EOS."""

    model_type: str = "clip_text_model"
    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    projection_dim: int = 512
    bos_token_id: int | None = 49406
    eos_token_id: int | None = 49407
    pad_token_id: int | None = 1
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_hf(cls, d: dict) -> ClipTextConfig:
        known, extra = _split(cls, d)
        return cls(**known, extra=extra)

    def to_hf(self) -> dict:
        return _plain(self)


@dataclass
class SiglipVisionConfig(VisionConfig):
    """SigLIP's ViT: no class token, a patch conv with bias, no pre-norm; the post-norm covers every
    state and a learned probe attends over them to pool (`vision_use_head`)."""

    model_type: str = "siglip_vision_model"
    patch_size: int = 16
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    vision_use_head: bool = True

    class_token: ClassVar[bool] = False
    patch_bias: ClassVar[bool] = True
    pre_norm: ClassVar[bool] = False

    @property
    def pooling(self) -> str:
        return "head" if self.vision_use_head else "none"

    def to_hf(self) -> dict:
        d = _plain(self)
        if "projection_dim" not in self.extra:
            d.pop("projection_dim")  # a CLIP field SigLIP's config does not have
        return d


@dataclass
class SiglipTextConfig:
    """SigLIP's text tower: bidirectional pre-LN blocks with learned positions, pooled at the last
    position (texts are padded to max_position_embeddings), then a linear `head`."""

    model_type: str = "siglip_text_model"
    vocab_size: int = 32000
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 64
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    projection_size: int | None = None  # the head's output width; None means hidden_size
    pad_token_id: int | None = 1
    bos_token_id: int | None = 49406
    eos_token_id: int | list[int] | None = 49407
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.projection_size = self.projection_size or self.hidden_size

    @classmethod
    def from_hf(cls, d: dict) -> SiglipTextConfig:
        known, extra = _split(cls, d)
        return cls(**known, extra=extra)

    def to_hf(self) -> dict:
        return _plain(self)


@dataclass
class SiglipConfig:
    """The SigLIP dual encoder: logits are exp(logit_scale) * cosine + logit_bias, read with a sigmoid."""

    model_type: str = "siglip"
    text_config: SiglipTextConfig = field(default_factory=SiglipTextConfig)
    vision_config: SiglipVisionConfig = field(default_factory=SiglipVisionConfig)
    initializer_factor: float = 1.0
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_hf(cls, d: dict) -> SiglipConfig:
        d = dict(d)
        text = SiglipTextConfig.from_hf(d.pop("text_config", None) or {})
        vision = SiglipVisionConfig.from_hf(d.pop("vision_config", None) or {})
        known, extra = _split(cls, d)
        return cls(**known, text_config=text, vision_config=vision, extra=extra)

    def to_hf(self) -> dict:
        d = _plain(self)
        d["text_config"] = self.text_config.to_hf()
        d["vision_config"] = self.vision_config.to_hf()
        return d


@dataclass
class LlavaConfig:
    """LLaVA 1.5 (`llava`) and LLaVA-NeXT (`llava_next`): ViT -> MLP projector -> decoder."""

    model_type: str = "llava"
    vision_config: VisionConfig = field(default_factory=VisionConfig)
    text_config: TextConfig = field(default_factory=TextConfig)
    image_token_index: int = 32000
    projector_hidden_act: str = "gelu"
    projector_type: str = "mlp"  # "linear" is LLaVA 1.0; transformers only has the MLP
    vision_feature_select_strategy: str = "default"
    vision_feature_layer: int | list[int] = -2
    multimodal_projector_bias: bool = True
    image_grid_pinpoints: list[list[int]] | None = None  # llava_next only
    tie_word_embeddings: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def num_feature_layers(self) -> int:
        return 1 if isinstance(self.vision_feature_layer, int) else len(self.vision_feature_layer)

    @classmethod
    def from_hf(cls, d: dict) -> LlavaConfig:
        d = dict(d)
        if "image_token_id" in d and "image_token_index" not in d:
            d["image_token_index"] = d.pop("image_token_id")
        text = TextConfig.from_hf(d.pop("text_config", None) or {})
        vision = VisionConfig.from_hf(d.pop("vision_config", None) or {})
        known, extra = _split(cls, d)
        if known.get("model_type") == "llava_next" and known.get("image_grid_pinpoints") is None:
            known["image_grid_pinpoints"] = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
        cfg = cls(**known, vision_config=vision, text_config=text, extra=extra)
        if cfg.model_type == "llava":
            # llava (not llava_next) configs of old kept the flag in the text config only
            cfg.tie_word_embeddings = cfg.tie_word_embeddings or text.tie_word_embeddings
        return cfg

    def to_hf(self) -> dict:
        d = _plain(self)
        d["vision_config"] = self.vision_config.to_hf()
        d["text_config"] = self.text_config.to_hf()
        if self.model_type != "llava_next":
            d.pop("image_grid_pinpoints")
        if self.projector_type == "mlp":
            d.pop("projector_type")  # keep configs identical to what transformers writes
        return d


@dataclass
class ClipConfig:
    """The CLIP dual encoder."""

    model_type: str = "clip"
    text_config: ClipTextConfig = field(default_factory=ClipTextConfig)
    vision_config: VisionConfig = field(default_factory=VisionConfig)
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_hf(cls, d: dict) -> ClipConfig:
        d = dict(d)
        text = ClipTextConfig.from_hf(d.pop("text_config", None) or {})
        vision = VisionConfig.from_hf(d.pop("vision_config", None) or {})
        known, extra = _split(cls, d)
        return cls(**known, text_config=text, vision_config=vision, extra=extra)

    def to_hf(self) -> dict:
        d = _plain(self)
        d["text_config"] = self.text_config.to_hf()
        d["vision_config"] = self.vision_config.to_hf()
        return d


@dataclass
class QwenVisionConfig:
    """Qwen2-VL's native-resolution ViT (`qwen2_vl_vision`: LayerNorm, GELU MLP) and Qwen2.5-VL's
    (`qwen2_5_vl_vision`: RMSNorm, SwiGLU with bias, window attention). Field names are transformers';
    the two versions name the width differently, which `width`, `out_size` and `mlp_size` hide."""

    model_type: str = "qwen2_vl_vision"
    depth: int = 32
    embed_dim: int | None = None  # Qwen2-VL: the ViT width; hidden_size is then the LM width
    hidden_size: int = 3584  # Qwen2.5-VL: the ViT width (out_hidden_size is the LM width)
    out_hidden_size: int | None = None
    hidden_act: str = "quick_gelu"
    mlp_ratio: float = 4
    intermediate_size: int | None = None
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    window_size: int | None = None  # Qwen2.5-VL: window side in pixels
    fullatt_block_indexes: list[int] = field(default_factory=list)
    tokens_per_second: float | None = None  # Qwen2.5-VL: temporal positions per second of video
    rope_theta: float = 10000.0
    extra: dict = field(default_factory=dict)

    @property
    def v25(self) -> bool:
        return self.model_type == "qwen2_5_vl_vision"

    @property
    def width(self) -> int:
        return self.hidden_size if self.v25 else self.embed_dim

    @property
    def out_size(self) -> int:
        return self.out_hidden_size if self.v25 else self.hidden_size

    @property
    def mlp_size(self) -> int:
        return self.intermediate_size if self.v25 else int(self.embed_dim * self.mlp_ratio)

    @classmethod
    def from_hf(cls, d: dict, v25: bool) -> QwenVisionConfig:
        d = dict(d)
        # old hub configs call the vision part "qwen2_vl" / "qwen2_5_vl"
        d["model_type"] = "qwen2_5_vl_vision" if v25 else "qwen2_vl_vision"
        rope = d.pop("rope_parameters", None) or {}
        if "rope_theta" in rope:
            d["rope_theta"] = rope["rope_theta"]
        defaults = {
            True: {
                "hidden_act": "silu",
                "intermediate_size": 3420,
                "window_size": 112,
                "out_hidden_size": 3584,
                "fullatt_block_indexes": [7, 15, 23, 31],
                "tokens_per_second": 4,
            },
            False: {"embed_dim": 1280},
        }[v25]
        for k, v in defaults.items():
            d.setdefault(k, v)
        known, extra = _split(cls, d)
        return cls(**known, extra=extra)

    def to_hf(self) -> dict:
        d = _plain(self)
        d["rope_parameters"] = {"rope_type": "axial", "rope_theta": d.pop("rope_theta")}
        drop = (
            ("embed_dim", "mlp_ratio")
            if self.v25
            else (
                "out_hidden_size",
                "intermediate_size",
                "window_size",
                "fullatt_block_indexes",
                "tokens_per_second",
            )
        )
        for k in drop:
            d.pop(k)
        return d


@dataclass
class Qwen2VLConfig:
    """Qwen2-VL (`qwen2_vl`) and Qwen2.5-VL (`qwen2_5_vl`): native-resolution ViT -> 2x2 patch merger ->
    Qwen2 decoder with multimodal rotary positions."""

    model_type: str = "qwen2_vl"
    vision_config: QwenVisionConfig = field(default_factory=QwenVisionConfig)
    text_config: TextConfig = field(default_factory=TextConfig)
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    tie_word_embeddings: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def v25(self) -> bool:
        return self.model_type == "qwen2_5_vl"

    @classmethod
    def from_hf(cls, d: dict) -> Qwen2VLConfig:
        d = dict(d)
        v25 = d.get("model_type") == "qwen2_5_vl"
        text = d.pop("text_config", None)
        if text is None:  # the hub's legacy layout: the text settings sit at the top level
            names = {f.name for f in dataclasses.fields(TextConfig)} | {
                "rope_parameters",
                "use_sliding_window",
            }
            names -= {"model_type", "extra", "tie_word_embeddings"}
            text = {k: d.pop(k) for k in list(d) if k in names}
            for k in ("max_window_layers", "attention_dropout", "initializer_range", "use_cache"):
                if k in d:
                    text[k] = d.pop(k)
        text = {**text, "model_type": "qwen2_5_vl_text" if v25 else "qwen2_vl_text"}
        text_cfg = TextConfig.from_hf(text)
        if text_cfg.mrope_section is None:
            text_cfg.mrope_section = [16, 24, 24]  # transformers' default when a config names none
        vision = QwenVisionConfig.from_hf(d.pop("vision_config", None) or {}, v25)
        known, extra = _split(cls, d)
        cfg = cls(**known, vision_config=vision, text_config=text_cfg, extra=extra)
        # configs saved before transformers 5 kept the flag in the text settings only
        cfg.tie_word_embeddings = cfg.tie_word_embeddings or text_cfg.tie_word_embeddings
        return cfg

    def to_hf(self) -> dict:
        d = _plain(self)
        d["vision_config"] = self.vision_config.to_hf()
        d["text_config"] = self.text_config.to_hf()
        return d


def jsonable(d: Any) -> Any:
    """Tuples to lists, recursively, for json.dump."""
    if isinstance(d, dict):
        return {k: jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [jsonable(v) for v in d]
    return d


@dataclass
class PerceiverConfig:
    """Flamingo's perceiver resampler: a fixed set of learned latents cross-attends to image features."""

    model_type: str = "idefics_perciever"  # sic: transformers' spelling
    use_resampler: bool = False
    resampler_n_latents: int = 64
    resampler_depth: int = 6
    resampler_n_heads: int = 16
    resampler_head_dim: int = 96
    qk_layer_norms_perceiver: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_hf(cls, d: dict) -> PerceiverConfig:
        known, extra = _split(cls, d)
        return cls(**known, extra=extra)

    def to_hf(self) -> dict:
        return _plain(self)


@dataclass
class IdeficsConfig:
    """IDEFICS v1 (`idefics`): CLIP ViT -> optional perceiver resampler -> a Llama decoder with gated
    cross-attention blocks every cross_layer_interval layers. The text settings sit at the top level."""

    model_type: str = "idefics"
    vocab_size: int = 32000
    additional_vocab_size: int = 0  # extra rows (e.g. <image>) kept in their own embedding and head
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    alpha_type: str = "float"  # the gates' tanh(alpha): one number, or one per channel ("vector")
    alpha_initializer: str = "zeros"
    cross_layer_interval: int = 1
    qk_layer_norms: bool = False
    use_resampler: bool = False
    tie_word_embeddings: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    pad_token_id: int | None = 0
    vision_config: VisionConfig = field(default_factory=VisionConfig)
    perceiver_config: PerceiverConfig = field(default_factory=PerceiverConfig)
    extra: dict = field(default_factory=dict)

    @property
    def text_config(self) -> TextConfig:
        """The decoder's settings (plain multi-head attention: no grouped k/v heads)."""
        return TextConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            hidden_act=self.hidden_act,
            max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            tie_word_embeddings=self.tie_word_embeddings,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
        )

    @classmethod
    def from_hf(cls, d: dict) -> IdeficsConfig:
        d = dict(d)
        rope = d.pop("rope_parameters", None) or {}
        if rope.get("rope_type", "default") != "default":
            raise NotImplementedError(f"IDEFICS with rope_type {rope['rope_type']!r} is not supported")
        if "rope_theta" in rope:
            d["rope_theta"] = rope["rope_theta"]
        vision = dict(d.pop("vision_config", None) or {})
        if "embed_dim" in vision:  # IDEFICS names the ViT width embed_dim
            vision["hidden_size"] = vision.pop("embed_dim")
        vision = VisionConfig.from_hf({"hidden_act": "gelu", "patch_size": 14, **vision})
        perceiver = PerceiverConfig.from_hf(d.pop("perceiver_config", None) or {})
        known, extra = _split(cls, d)
        return cls(**known, vision_config=vision, perceiver_config=perceiver, extra=extra)

    def to_hf(self) -> dict:
        d = _plain(self)
        d["rope_parameters"] = {"rope_theta": d.pop("rope_theta"), "rope_type": "default"}
        vision = self.vision_config.to_hf()
        vision["embed_dim"] = vision.pop("hidden_size")
        vision.pop("projection_dim")
        d["vision_config"] = vision
        d["perceiver_config"] = self.perceiver_config.to_hf()
        return d
