"""LLaVA 1.5: CLIP-style ViT -> MLP projector -> Llama-family decoder, image features spliced
into the token stream at the `<image>` placeholder positions."""

from __future__ import annotations

import torch
from torch import nn

from ..config import LlavaConfig
from ..connect import LinearProjector, MLPProjector
from ..text import Decoder
from ..vision import VisionTransformer
from .chat import ChatMixin
from .output import ModelOutput
from .pretrained import PretrainedMixin


class Llava(ChatMixin, PretrainedMixin, nn.Module):
    ARCHITECTURE = "LlavaForConditionalGeneration"

    def __init__(self, cfg: LlavaConfig):
        super().__init__()
        self.cfg = cfg
        self.vision = VisionTransformer(cfg.vision_config)
        vision_dim = cfg.vision_config.hidden_size * cfg.num_feature_layers
        text_dim, bias = cfg.text_config.hidden_size, cfg.multimodal_projector_bias
        if cfg.projector_type == "linear":
            self.projector = LinearProjector(vision_dim, text_dim, bias=bias)
        elif cfg.projector_type == "mlp":
            self.projector = MLPProjector(vision_dim, text_dim, cfg.projector_hidden_act, bias=bias)
        else:
            raise ValueError(f"projector_type must be 'mlp' or 'linear', got {cfg.projector_type!r}")
        self.language_model = Decoder(cfg.text_config, tie=cfg.tie_word_embeddings)

    @property
    def image_token_id(self) -> int:
        return self.cfg.image_token_index

    def image_features(self, pixel_values: torch.Tensor, image_sizes=None) -> list[torch.Tensor]:
        """One [N, D_text] tensor per image."""
        feats = self.vision.select(
            pixel_values, self.cfg.vision_feature_layer, self.cfg.vision_feature_select_strategy
        )
        return list(self.projector(feats))

    def num_image_tokens(self, image_size_hw=None) -> int:
        v = self.cfg.vision_config
        return v.num_patches + (self.cfg.vision_feature_select_strategy == "full")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache=None,
        image_features: list[torch.Tensor] | None = None,
        last_only: bool = False,
        **unused,
    ) -> ModelOutput:
        lm_inputs = (input_ids, attention_mask, position_ids, labels, cache, image_features, last_only)
        return self.forward_spliced(*lm_inputs, pixel_values, image_sizes=image_sizes)
