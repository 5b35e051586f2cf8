"""IDEFICS v1 (an open Flamingo): CLIP-style ViT -> optional perceiver resampler -> a Llama decoder
whose text reads the images through gated cross-attention blocks placed before every
cross_layer_interval-th layer. Images never enter the token stream: an `<image>` token only marks
where an image sits, and the media-location mask lets each token see the latest image before it."""

from __future__ import annotations

import torch
from torch import nn

from ..config import IdeficsConfig
from ..connect.gated_xattn import GatedCrossAttentionBlock
from ..connect.perceiver import PerceiverResampler
from ..nn import KVCache, build_mask, positions_from_mask
from ..nn.decoupled import DecoupledEmbedding, DecoupledLinear
from ..nn.masks import CAUSAL
from ..nn.media_mask import cross_attention_mask, media_locations
from ..nn.rope import rope_for_heads
from ..text import Decoder
from ..vision import VisionTransformer
from .chat import ChatMixin
from .cross_media import CrossMediaMixin, pad_media
from .output import ModelOutput
from .pretrained import PretrainedMixin
from .splice import next_token_loss

# IDEFICS' instruct format; images bracketed by fake tokens as IdeficsProcessor writes them
IDEFICS_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ 'User:' if m['role'] == 'user' else 'Assistant:' }}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
    "{% if p['type'] == 'image' %}<fake_token_around_image><image><fake_token_around_image>"
    "{% else %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


class MediaCache(KVCache):
    """A KV cache that also keeps the prompt's image states and the last token's media row, which
    every generated token reuses (it continues the text after the same image)."""

    media: torch.Tensor | None = None  # [B, N * S, Dv]
    media_row: torch.Tensor | None = None  # [B, 1, N]


class Idefics(CrossMediaMixin, ChatMixin, PretrainedMixin, nn.Module):
    ARCHITECTURE = "IdeficsForVisionText2Text"
    fallback_chat_template = IDEFICS_CHAT_TEMPLATE

    def __init__(self, cfg: IdeficsConfig):
        super().__init__()
        self.cfg = cfg
        v, p = cfg.vision_config, cfg.perceiver_config
        self.vision = VisionTransformer(v)
        self.resampler = None
        if cfg.use_resampler:
            self.resampler = PerceiverResampler(
                v.hidden_size,
                p.resampler_depth,
                p.resampler_n_heads,
                p.resampler_head_dim,
                p.resampler_n_latents,
                qk_norm=p.qk_layer_norms_perceiver,
            )
        text = cfg.text_config
        self.language_model = Decoder(text, tie=cfg.tie_word_embeddings)
        if cfg.additional_vocab_size:
            if cfg.tie_word_embeddings:
                raise NotImplementedError("IDEFICS with tied embeddings and additional_vocab_size")
            added, D = cfg.additional_vocab_size, cfg.hidden_size
            self.language_model.embed_tokens = DecoupledEmbedding(cfg.vocab_size, added, D)
            self.language_model.lm_head = DecoupledLinear(D, cfg.vocab_size, added)
        self.cross_layers = nn.ModuleList(
            GatedCrossAttentionBlock(
                cfg.hidden_size,
                cfg.num_attention_heads,
                v.hidden_size,
                cfg.intermediate_size,
                cfg.hidden_act,
                cfg.rms_norm_eps,
                cfg.alpha_type,
                cfg.qk_layer_norms,
            )
            for _ in range(cfg.num_hidden_layers // cfg.cross_layer_interval)
        )

    @property
    def image_token_id(self) -> int | None:
        """The `<image>` placeholder's id, from the tokenizer (None without one)."""
        return None if self.tokenizer is None else self.tokenizer.token_to_id("<image>")

    def new_cache(self, batch: int, max_len: int) -> MediaCache:
        p, c = self.language_model.embed_tokens.weight, self.language_model.cfg
        H, Dh = c.num_attention_heads, c.head_dim
        return MediaCache(c.num_hidden_layers, batch, H, Dh, max_len, p.dtype, p.device)

    def media_states(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, N, 3, S, S] -> the states text cross-attends to, [B, N * tokens_per_image, Dv]."""
        B, N = pixel_values.shape[:2]
        x = self.vision.hidden_states(pixel_values.flatten(0, 1))[-1]  # [B * N, 1 + P, Dv]
        if self.resampler is not None:
            x = self.resampler(x)  # [B * N, n_latents, Dv]
        return x.reshape(B, -1, x.shape[-1])

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache: MediaCache | None = None,
        image_counts: torch.Tensor | None = None,
        last_only: bool = False,
        image_features: list[torch.Tensor] | None = None,
        media: torch.Tensor | None = None,
        **unused,
    ) -> ModelOutput:
        """pixel_values [B, N, 3, S, S] as IdeficsProcessor makes them (rows with fewer images padded),
        or [sum N, 3, S, S] with image_counts [B]. image_attention_mask [B, T, N]: built from the
        `<image>` tokens when not given. A cache carries the images on to later calls.
        Instead of pixels: image_features, one [tokens_per_image, Dv] state per image in the order of
        the `<image>` tokens (cached ones), or media [B, N * tokens_per_image, Dv] with its
        image_attention_mask."""
        lm = self.language_model
        x = lm.embed_tokens(input_ids)  # [B, T, D]
        B, T, _ = x.shape
        past = cache.length if cache is not None else 0
        if media is not None:  # states and mask given (a continuous batch's decode step)
            N = image_attention_mask.shape[-1]
        elif image_features:
            media, N = self.stack_media(input_ids, image_features)
        elif pixel_values is not None and pixel_values.numel() > 0:
            if image_counts is not None:
                pixel_values = pad_media(pixel_values, image_counts.tolist())
            media = self.media_states(pixel_values)
            N = pixel_values.shape[1]
        elif isinstance(cache, MediaCache) and cache.media is not None:  # decoding: the prompt's images
            media, N = cache.media, cache.media_row.shape[-1]
            if image_attention_mask is None:
                image_attention_mask = cache.media_row.expand(B, T, N)
        # no media: text only, the cross-attention terms vanish, the dense terms stay
        mask = gate = None
        if media is not None:
            if image_attention_mask is None:
                image_attention_mask = self._media_locations(input_ids, N)
            image_attention_mask = image_attention_mask[:, -T:]
            mask, gate = cross_attention_mask(image_attention_mask, media.shape[1] // N, x.dtype)
            if isinstance(cache, MediaCache):
                cache.media, cache.media_row = media, image_attention_mask[:, -1:]

        if attention_mask is None:
            attention_mask = torch.ones(B, past + T, dtype=torch.long, device=x.device)
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask)[:, past:]
        if past == 0 and T > 1 and bool(attention_mask.all()):
            self_mask = CAUSAL
        else:
            self_mask = build_mask(attention_mask, T, past + T, x.dtype, causal=True)
        rope = rope_for_heads(*lm.rotary(position_ids, x.dtype))
        every = self.cfg.cross_layer_interval
        for i, layer in enumerate(lm.layers):
            if i % every == 0:
                x = self.cross_layers[i // every](x, media, mask, gate)
            x = layer(x, self_mask, rope, cache, i)
        if cache is not None:
            cache.advance(T)
        logits = lm.lm_head(lm.norm(x[:, -1:] if last_only else x))
        loss = None if labels is None else next_token_loss(logits, labels)
        return ModelOutput(logits=logits, loss=loss)

    # --- chat ---

    def prepare_images(self, images: list) -> tuple[dict, list[int]]:
        """PIL images -> pixels [N, 3, S, S] with their count (one `<image>` token each)."""
        pixels = self.image_transform.batch(images)
        return {"pixel_values": pixels, "image_counts": torch.tensor([len(images)])}, [1] * len(images)

    def _media_locations(self, input_ids: torch.Tensor, num_images: int) -> torch.Tensor:
        if self.image_token_id is None:
            raise ValueError("without a tokenizer that knows <image>, pass image_attention_mask")
        return media_locations(input_ids, self.image_token_id, num_images, self.cfg.eos_token_id)

    # --- continuous batching: what generation/engine.py asks of a cross-attention model ---

    def image_features(self, pixel_values: torch.Tensor, **unused) -> list[torch.Tensor]:
        """[n, 3, S, S] -> one [tokens_per_image, Dv] state per image (what a feature cache keeps)."""
        return list(self.media_states(pixel_values[:, None]))
