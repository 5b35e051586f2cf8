"""BLIP-2 and InstructBLIP: BLIP ViT -> Q-Former -> language_projection -> decoder (OPT or Llama-family).

A fixed set of learned queries reads the image through the Q-Former; their outputs, projected to the
decoder's width, replace num_query_tokens `<image>` tokens at the start of the prompt (before BOS,
where Blip2Processor puts them). InstructBLIP also feeds the instruction's tokens (its own BERT
vocabulary) to the Q-Former, so the image tokens depend on what was asked: in a chat that is the
last user message, which therefore belongs to each image's feature-cache key (`media_inputs_for`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..config_blip2 import Blip2Config, OPTConfig
from ..connect.qformer import QFormer
from ..errors import UnsupportedModelError, VislangError
from ..nn import Linear
from ..processing.blip import (
    BLIP2_CHAT_TEMPLATE,
    INSTRUCTBLIP_CHAT_TEMPLATE,
    instruction,
    processor_inputs,
    qformer_inputs,
)
from ..text import Decoder
from ..text.opt import OPTDecoder
from ..vision.blip import BlipVisionTransformer
from .chat import ChatMixin
from .output import ModelOutput
from .pretrained import PretrainedMixin


class Blip2(ChatMixin, PretrainedMixin, nn.Module):
    ARCHITECTURE = "Blip2ForConditionalGeneration"
    fallback_chat_template = BLIP2_CHAT_TEMPLATE
    qformer_tokenizer = None  # InstructBLIP's instruction tokenizer

    def __init__(self, cfg: Blip2Config):
        super().__init__()
        self.cfg = cfg
        self.vision = BlipVisionTransformer(cfg.vision_config)
        self.qformer = QFormer(cfg.qformer_config, cfg.num_query_tokens)
        self.language_projection = Linear(cfg.qformer_config.hidden_size, cfg.text_config.hidden_size)
        lm = OPTDecoder if isinstance(cfg.text_config, OPTConfig) else Decoder
        self.language_model = lm(cfg.text_config)
        width = self.language_model.embed_tokens.embedding_dim
        if width != cfg.text_config.hidden_size:  # OPT-350m: narrower word embeddings than blocks
            raise UnsupportedModelError(
                f"image features of width {cfg.text_config.hidden_size} cannot stand in for token "
                f"embeddings of width {width} (word_embed_proj_dim)"
            )

    @property
    def image_token_id(self) -> int:
        if self.cfg.image_token_index is not None:
            return self.cfg.image_token_index
        # configs from before transformers placed image tokens name none: the processor adds <image>
        found = self.tokenizer.token_to_id("<image>") if self.tokenizer is not None else None
        if found is None:
            raise VislangError("the config has no image_token_index and the tokenizer has no <image> token")
        return found

    def image_features(
        self,
        pixel_values: torch.Tensor,
        qformer_input_ids: torch.Tensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        **unused,
    ) -> list[torch.Tensor]:
        """[n, 3, S, S] (and the instruction's Q-Former ids [n, L]) -> one [num_query_tokens, D_text]
        tensor per image."""
        image = self.vision(pixel_values)  # [n, 1 + N, Dv]
        queries = self.qformer(image, qformer_input_ids, qformer_attention_mask)  # [n, Q, Dq]
        return list(self.language_projection(queries.to(image.dtype)))

    def num_image_tokens(self, image_size_hw=None) -> int:
        return self.cfg.num_query_tokens

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        qformer_input_ids: torch.Tensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache=None,
        image_features: list[torch.Tensor] | None = None,
        last_only: bool = False,
        **unused,
    ) -> ModelOutput:
        """Inputs as Blip2Processor / InstructBlipProcessor make them; image_features (one
        [num_query_tokens, D_text] per image) instead of pixels when already computed."""
        lm_inputs = (input_ids, attention_mask, position_ids, labels, cache, image_features, last_only)
        qformer = {"qformer_input_ids": qformer_input_ids, "qformer_attention_mask": qformer_attention_mask}
        return self.forward_spliced(*lm_inputs, pixel_values, **qformer)

    # --- prompts ---

    def prompt_ids(
        self, clean_messages: list[dict], image_token_counts: list[int], tools: list[dict] | None = None
    ) -> list[int]:
        """The rendered conversation's ids (with BOS when the tokenizer adds one) after every image's
        tokens: the processors put images first, wherever they sit in the messages."""
        text_only = [
            {**m, "content": [p for p in m["content"] if p.get("type") not in ("image", "video")]}
            if isinstance(m.get("content"), list)
            else m
            for m in clean_messages
        ]
        ids = super().prompt_ids(text_only, [], tools)
        return [self.image_token_id] * sum(image_token_counts) + ids

    def processor_inputs(self, texts: list[str], images: list | None = None) -> dict[str, torch.Tensor]:
        """What the transformers processor of this model makes of the texts and one image each."""
        reads_text = self.cfg.qformer_config.use_qformer_text_input
        return processor_inputs(
            texts,
            images,
            self.tokenizer,
            self.image_transform,
            self.image_token_id,
            self.cfg.num_query_tokens,
            self.qformer_tokenizer if reads_text else None,
        )


class InstructBlip(Blip2):
    ARCHITECTURE = "InstructBlipForConditionalGeneration"
    fallback_chat_template = INSTRUCTBLIP_CHAT_TEMPLATE

    def image_features(self, pixel_values, qformer_input_ids=None, qformer_attention_mask=None, **unused):
        if qformer_input_ids is None:
            raise VislangError("InstructBLIP's Q-Former reads the instruction: pass qformer_input_ids")
        return super().image_features(pixel_values, qformer_input_ids, qformer_attention_mask)

    def media_inputs_for(self, clean_messages: list[dict]) -> dict[str, torch.Tensor]:
        """The instruction (the last user message) in the Q-Former's vocabulary, [1, L]."""
        if self.qformer_tokenizer is None:
            raise VislangError("this InstructBLIP has no Q-Former tokenizer (qformer_tokenizer/ folder)")
        return qformer_inputs(self.qformer_tokenizer, [instruction(clean_messages)])

    def save_pretrained(self, path, max_shard_bytes: int = 5 * 2**30) -> None:
        super().save_pretrained(path, max_shard_bytes)
        if self.qformer_tokenizer is not None:
            self.qformer_tokenizer.save(Path(path) / "qformer_tokenizer")
