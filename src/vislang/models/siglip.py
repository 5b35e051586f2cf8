"""SigLIP: CLIP's two towers, scored pair by pair with a sigmoid instead of a softmax over the batch.

logits = exp(logit_scale) * cosine(text, image) + logit_bias; sigmoid(logits) is the probability
that a text matches an image, on its own, with no other candidates needed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SiglipConfig
from ..errors import CheckpointError
from ..processing import load_image
from ..text import SiglipTextTransformer
from ..vision import VisionTransformer
from .clip import ClipOutput
from .pretrained import PretrainedMixin


class Siglip(PretrainedMixin, nn.Module):
    ARCHITECTURE = "SiglipModel"

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        if cfg.vision_config.pooling != "head":
            raise ValueError("a SigLIP dual encoder needs its vision head: vision_use_head must be true")
        self.cfg = cfg
        self.vision = VisionTransformer(cfg.vision_config)
        self.text = SiglipTextTransformer(cfg.text_config)
        # the paper's starting point: temperature 10, bias -10 (most pairs do not match)
        self.logit_scale = nn.Parameter(torch.tensor([math.log(10.0)]))
        self.logit_bias = nn.Parameter(torch.tensor([-10.0]))

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled (not normalized) image embeddings [B, D]."""
        return self.vision(pixel_values)[1]

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Pooled (not normalized) text embeddings [B, P]."""
        return self.text(input_ids, attention_mask)[1]

    def forward(self, input_ids, pixel_values, attention_mask=None, **unused) -> ClipOutput:
        image = F.normalize(self.get_image_features(pixel_values), dim=-1)
        text = F.normalize(self.get_text_features(input_ids, attention_mask), dim=-1)
        logits_per_text = self.logit_scale.exp() * text @ image.T + self.logit_bias  # [B_texts, B_images]
        return ClipOutput(logits_per_text.T, logits_per_text, image, text)

    def pad_texts(self, texts: list[str]) -> torch.Tensor:
        """Token ids [B, max_position_embeddings]: each text truncated to fit (its special tokens kept)
        and padded at the end, the fixed-length input SigLIP was trained on."""
        if self.tokenizer is None:
            raise CheckpointError(
                "this SigLIP folder has no tokenizer.json: vislang cannot encode texts for it"
            )
        backend = self.tokenizer.backend
        length = self.cfg.text_config.max_position_embeddings
        pad = self.tokenizer.pad_token_id
        pad = self.tokenizer.eos_token_id if pad is None else pad
        if pad is None:
            raise CheckpointError("the tokenizer has neither a pad nor an eos token to pad texts with")
        ids = torch.full((len(texts), length), pad, dtype=torch.long)
        room = length - backend.num_special_tokens_to_add(False)
        for i, text in enumerate(texts):
            encoding = backend.encode(text, add_special_tokens=False)
            encoding.truncate(room)
            row = backend.post_process(encoding).ids
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return ids

    @torch.inference_mode()
    def embed(self, images=None, texts=None) -> dict[str, torch.Tensor]:
        """Unit-norm embeddings of images (paths, bytes, PIL, arrays) and texts (strings)."""
        out = {}
        if images:
            pixels = self.image_transform.batch([load_image(im) for im in images])
            out["image_embeds"] = F.normalize(self.get_image_features(pixels), dim=-1)
        if texts:
            # no attention mask: padding takes part in attention, as in training
            out["text_embeds"] = F.normalize(self.get_text_features(self.pad_texts(list(texts))), dim=-1)
        return out
