"""Configs of the Q-Former family (BLIP-2, InstructBLIP), read from and written to config.json dicts.

Kept apart from config.py only for length; the conventions are the same (Hugging Face field names,
unknown keys kept in `extra` and written back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .config import TextConfig, _plain, _split
from .errors import UnsupportedModelError


@dataclass
class QFormerConfig:
    """BLIP-2's Querying Transformer: a BERT-style encoder over learned queries (and, for InstructBLIP,
    the instruction's tokens) whose query positions cross-attend to the image every
    cross_attention_frequency layers."""

    model_type: str = "blip_2_qformer"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    cross_attention_frequency: int = 2
    encoder_hidden_size: int = 1408  # the vision tower's width
    use_qformer_text_input: bool = False  # InstructBLIP: the instruction's tokens join the queries
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_hf(cls, d: dict) -> QFormerConfig:
        known, extra = _split(cls, d)
        return cls(**known, extra=extra)

    def to_hf(self) -> dict:
        return _plain(self)


@dataclass
class BlipVisionConfig:
    """BLIP's ViT (EVA-CLIP in the released BLIP-2 models): a class token, a patch conv with bias,
    no pre-norm, pre-LN blocks whose attention packs q, k and v in one `qkv` matrix."""

    model_type: str = "blip_2_vision_model"
    hidden_size: int = 1408
    intermediate_size: int = 6144
    num_hidden_layers: int = 39
    num_attention_heads: int = 16
    image_size: int = 224
    patch_size: int = 14
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True  # the packed bias; its k third stays zero in trained checkpoints
    extra: dict = field(default_factory=dict)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_hf(cls, d: dict) -> BlipVisionConfig:
        known, extra = _split(cls, d)
        return cls(**known, extra=extra)

    def to_hf(self) -> dict:
        return _plain(self)


@dataclass
class OPTConfig:
    """Meta's OPT decoder, BLIP-2's language model in its released checkpoints: learned positions
    (offset by 2), LayerNorm pre-norm, a ReLU MLP, biases, optional in/out projections around the
    blocks when the embeddings are narrower (word_embed_proj_dim)."""

    model_type: str = "opt"
    vocab_size: int = 50272
    hidden_size: int = 768
    num_hidden_layers: int = 12
    ffn_dim: int = 3072
    max_position_embeddings: int = 2048
    do_layer_norm_before: bool = True
    _remove_final_layer_norm: bool = False
    word_embed_proj_dim: int | None = None
    num_attention_heads: int = 12
    activation_function: str = "relu"
    enable_bias: bool = True
    layer_norm_elementwise_affine: bool = True
    tie_word_embeddings: bool = True
    pad_token_id: int | None = 1
    bos_token_id: int | None = 2
    eos_token_id: int | list[int] | None = 2
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.word_embed_proj_dim = self.word_embed_proj_dim or self.hidden_size

    # what the KV cache and the engine read off any decoder's config
    @property
    def num_key_value_heads(self) -> int:
        return self.num_attention_heads

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, d: dict) -> OPTConfig:
        known, extra = _split(cls, d)
        return cls(**known, extra=extra)

    def to_hf(self) -> dict:
        return _plain(self)


def text_config_from_hf(d: dict) -> TextConfig | OPTConfig:
    """The language model's config: OPT (transformers' default here) or a Llama-family decoder."""
    d = dict(d)
    kind = d.get("model_type", "opt")
    if d.get("is_encoder_decoder") or kind in ("t5", "mt5", "umt5"):
        raise UnsupportedModelError(f"BLIP-2 / InstructBLIP with an encoder-decoder ({kind}) language model")
    return OPTConfig.from_hf(d) if kind == "opt" else TextConfig.from_hf(d)


@dataclass
class Blip2Config:
    """BLIP-2 (`blip-2`): BLIP ViT -> Q-Former over learned queries -> language_projection -> a decoder
    whose prompt starts with num_query_tokens image tokens per image."""

    model_type: str = "blip-2"
    vision_config: BlipVisionConfig = field(default_factory=BlipVisionConfig)
    qformer_config: QFormerConfig = field(default_factory=QFormerConfig)
    text_config: TextConfig | OPTConfig = field(default_factory=OPTConfig)
    num_query_tokens: int = 32
    image_token_index: int | None = None
    extra: dict = field(default_factory=dict)

    VISION_TYPE: ClassVar[str] = "blip_2_vision_model"
    QFORMER_TYPE: ClassVar[str] = "blip_2_qformer"

    @property
    def tie_word_embeddings(self) -> bool:
        """transformers ties the head as the language model's own config says."""
        return self.text_config.tie_word_embeddings

    @property
    def keymap(self) -> str:
        """The checkpoint key map's name: the language model's layout decides the weight names."""
        return f"{self.model_type}:{'opt' if isinstance(self.text_config, OPTConfig) else 'llama'}"

    @classmethod
    def from_hf(cls, d: dict) -> Blip2Config:
        d = dict(d)
        if "image_token_id" in d and "image_token_index" not in d:
            d["image_token_index"] = d.pop("image_token_id")
        vision = BlipVisionConfig.from_hf(
            {"model_type": cls.VISION_TYPE, **(d.pop("vision_config", None) or {})}
        )
        qformer = {"model_type": cls.QFORMER_TYPE, **(d.pop("qformer_config", None) or {})}
        qformer["encoder_hidden_size"] = vision.hidden_size  # transformers sets it so too
        qformer = QFormerConfig.from_hf(cls.qformer_settings(qformer))
        text = text_config_from_hf(d.pop("text_config", None) or {})
        known, extra = _split(cls, d)
        return cls(**known, vision_config=vision, qformer_config=qformer, text_config=text, extra=extra)

    @staticmethod
    def qformer_settings(d: dict) -> dict:
        return d

    def to_hf(self) -> dict:
        d = _plain(self)
        d["vision_config"] = self.vision_config.to_hf()
        d["qformer_config"] = self.qformer_config.to_hf()
        d["text_config"] = self.text_config.to_hf()
        return d


@dataclass
class InstructBlipConfig(Blip2Config):
    """InstructBLIP (`instructblip`): BLIP-2 whose Q-Former also reads the instruction's tokens
    (its own BERT vocabulary), so the image tokens depend on what was asked."""

    model_type: str = "instructblip"

    VISION_TYPE: ClassVar[str] = "instructblip_vision_model"
    QFORMER_TYPE: ClassVar[str] = "instructblip_qformer"

    @staticmethod
    def qformer_settings(d: dict) -> dict:
        # InstructBLIP's Q-Former config has no such field: it always reads text
        return {**d, "use_qformer_text_input": True}

    def to_hf(self) -> dict:
        d = super().to_hf()
        d["qformer_config"].pop("use_qformer_text_input")
        return d
