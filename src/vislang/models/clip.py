"""CLIP: an image tower and a text tower projected into one space, compared by scaled cosine."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ClipConfig
from ..nn import Linear
from ..processing import load_image
from ..text import ClipTextTransformer
from ..vision import VisionTransformer
from .pretrained import PretrainedMixin


@dataclass
class ClipOutput:
    logits_per_image: torch.Tensor  # [B_images, B_texts]
    logits_per_text: torch.Tensor  # [B_texts, B_images]
    image_embeds: torch.Tensor  # unit-norm [B_images, P]
    text_embeds: torch.Tensor  # unit-norm [B_texts, P]

    def __getitem__(self, key: str):
        return getattr(self, key)


class Clip(PretrainedMixin, nn.Module):
    ARCHITECTURE = "CLIPModel"

    def __init__(self, cfg: ClipConfig):
        super().__init__()
        self.cfg = cfg
        self.vision = VisionTransformer(cfg.vision_config)
        self.text = ClipTextTransformer(cfg.text_config)
        self.visual_projection = Linear(cfg.vision_config.hidden_size, cfg.projection_dim, bias=False)
        self.text_projection = Linear(cfg.text_config.hidden_size, cfg.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(cfg.logit_scale_init_value))

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected (not normalized) image embeddings [B, P]."""
        return self.visual_projection(self.vision(pixel_values)[1])

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Projected (not normalized) text embeddings [B, P]."""
        return self.text_projection(self.text(input_ids, attention_mask)[1])

    def forward(self, input_ids, pixel_values, attention_mask=None, **unused) -> ClipOutput:
        image = F.normalize(self.get_image_features(pixel_values), dim=-1)
        text = F.normalize(self.get_text_features(input_ids, attention_mask), dim=-1)
        logits_per_text = self.logit_scale.exp() * text @ image.T
        return ClipOutput(logits_per_text.T, logits_per_text, image, text)

    @torch.inference_mode()
    def embed(self, images=None, texts=None) -> dict[str, torch.Tensor]:
        """Unit-norm embeddings of images (paths, bytes, PIL, arrays) and texts (strings)."""
        out = {}
        if images:
            pixels = self.image_transform.batch([load_image(im) for im in images])
            out["image_embeds"] = F.normalize(self.get_image_features(pixels), dim=-1)
        if texts:
            batch = self.tokenizer.batch_encode(list(texts), padding_side="right")
            feats = self.get_text_features(batch["input_ids"], batch["attention_mask"])
            out["text_embeds"] = F.normalize(feats, dim=-1)
        return out
