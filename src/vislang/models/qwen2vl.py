"""Qwen2-VL and Qwen2.5-VL: a native-resolution ViT, a 2 x 2 patch merger, and a Qwen2 decoder with
multimodal rotary positions (M-RoPE). An image becomes as many tokens as its size asks for
(`smart_resize`), a video two frames per temporal patch; each sits between vision_start and
vision_end tokens, its features replacing the image_pad / video_pad placeholders."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..config import Qwen2VLConfig
from ..connect import PatchMerger
from ..errors import VislangError
from ..nn import positions_from_mask
from ..processing import load_image
from ..processing.chat_template import QWEN2VL_FALLBACK_CHAT_TEMPLATE
from ..processing.video import Video, load_video
from ..text import Decoder
from ..vision import QwenVisionTransformer
from .chat import ChatMixin, Media, concat_inputs
from .output import ModelOutput
from .pretrained import PretrainedMixin
from .qwen2vl_positions import rope_index
from .splice import splice_image_features


class Qwen2VL(ChatMixin, PretrainedMixin, nn.Module):
    fallback_chat_template = QWEN2VL_FALLBACK_CHAT_TEMPLATE  # for a folder that ships none
    video_transform = None  # set by vislang.load when the folder has video settings of its own

    def __init__(self, cfg: Qwen2VLConfig):
        super().__init__()
        self.cfg = cfg
        v = cfg.vision_config
        self.vision = QwenVisionTransformer(v)
        self.merger = PatchMerger(v.width, v.out_size, v.spatial_merge_size, rms=v.v25)
        self.language_model = Decoder(cfg.text_config, tie=cfg.tie_word_embeddings)
        self.video_fps = 2.0  # frames sampled per second of a video file
        self.max_frames = 768

    @property
    def ARCHITECTURE(self) -> str:  # noqa: N802 (the name PretrainedMixin reads)
        return "Qwen2_5_VLForConditionalGeneration" if self.cfg.v25 else "Qwen2VLForConditionalGeneration"

    @property
    def image_token_id(self) -> int:
        return self.cfg.image_token_id

    @property
    def video_token_id(self) -> int:
        return self.cfg.video_token_id

    @property
    def media_token_ids(self) -> tuple[int, ...]:
        return (self.cfg.image_token_id, self.cfg.video_token_id)

    # --- pixels to features ---

    def encode(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> list[torch.Tensor]:
        """Patches of several images (or videos) and their grids -> one [tokens, D_text] per grid."""
        merged = self.merger(self.vision(pixel_values, grid_thw))
        counts = (grid_thw.reshape(-1, 3).prod(-1) // self.cfg.vision_config.spatial_merge_size**2).tolist()
        return list(merged.split(counts))

    def image_features(
        self,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        **unused,
    ) -> list[torch.Tensor]:
        """Features of the images, then of the videos, given (one [tokens, D] each)."""
        feats = []
        if pixel_values is not None and pixel_values.numel() > 0:
            feats += self.encode(pixel_values, image_grid_thw)
        if pixel_values_videos is not None and pixel_values_videos.numel() > 0:
            feats += self.encode(pixel_values_videos, video_grid_thw)
        return feats

    def num_tokens(self, grid_thw) -> int:
        t, h, w = (int(x) for x in grid_thw)
        return t * h * w // self.cfg.vision_config.spatial_merge_size**2

    # --- chat: images and videos to inputs ---

    def load_media(self, media: Media) -> Media:
        if media.kind == "image":
            return Media("image", load_image(media.source), media.options)
        if media.kind != "video":
            raise VislangError(f"unknown media kind {media.kind!r}")
        if isinstance(media.source, Video):
            return media
        fps = float(media.options.get("fps", self.video_fps))
        max_frames = int(media.options.get("max_frames", self.max_frames))
        if max_frames > self.max_frames:
            raise VislangError(f"max_frames {max_frames} is over this model's limit of {self.max_frames}")
        return Media("video", load_video(media.source, fps=fps, max_frames=max_frames), media.options)

    def prepare_images(self, images: list, min_pixels=None, max_pixels=None) -> tuple[dict, list[int]]:
        inputs = self.image_transform.images(images, min_pixels=min_pixels, max_pixels=max_pixels)
        return inputs, [self.num_tokens(g) for g in inputs["image_grid_thw"]]

    def prepare_media(self, media: list[Media]) -> tuple[dict, list[int]]:
        """Each medium on its own (its settings may differ), joined in order of appearance."""
        parts, counts = [], []
        for m in media:
            size = {k: m.options.get(k) for k in ("min_pixels", "max_pixels")}
            if m.kind == "image":
                inputs, (count,) = self.prepare_images([m.source], **size)
            else:
                # a Video knows its sampled rate: the transform adds second_per_grid_ts from it
                inputs = (self.video_transform or self.image_transform).videos([m.source], **size)
                count = self.num_tokens(inputs["video_grid_thw"][0])
            parts.append(inputs)
            counts.append(count)
        return concat_inputs(parts), counts

    def save_pretrained(self, path, max_shard_bytes: int = 5 * 2**30) -> None:
        """As PretrainedMixin, plus the video settings when they differ from the images'."""
        super().save_pretrained(path, max_shard_bytes)
        video = self.video_transform
        if video is not None and self.image_transform is not None and video != self.image_transform:
            text = json.dumps(video.to_dict(), indent=2)
            (Path(path) / "video_preprocessor_config.json").write_text(text)

    # --- positions ---

    def positions(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        image_grid_thw=None,
        video_grid_thw=None,
        second_per_grid_ts=None,
        cache=None,
    ) -> torch.Tensor:
        """(t, h, w) positions [3, B, T] for a prompt; for tokens after a cached part, 1D positions
        [B, T] shifted by the offsets the prompt's prefill left in the cache."""
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        if past > 0:
            mask = attention_mask if attention_mask is not None else torch.ones(B, past + T, dtype=torch.long)
            offsets = cache.offsets if cache.offsets is not None else torch.zeros(B, dtype=torch.long)
            return positions_from_mask(mask)[:, past:] + offsets.to(input_ids.device)[:, None]
        intervals = None
        if video_grid_thw is not None:
            tps = self.cfg.vision_config.tokens_per_second if self.cfg.v25 else None
            n = video_grid_thw.reshape(-1, 3).shape[0]
            if tps is None:
                intervals = [1.0] * n
            else:
                seconds = second_per_grid_ts if second_per_grid_ts is not None else torch.ones(n)
                seconds = torch.as_tensor(seconds, dtype=torch.float32).reshape(-1)
                intervals = [tps * s for s in seconds]  # fp32, as transformers multiplies
        positions, offsets = rope_index(
            input_ids,
            self.cfg.image_token_id,
            self.cfg.video_token_id,
            image_grid_thw,
            video_grid_thw,
            attention_mask,
            self.cfg.vision_config.spatial_merge_size,
            intervals,
        )
        if cache is not None:
            cache.offsets = offsets
        return positions

    # --- forward ---

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,  # accepted; derived from the placeholders
        labels: torch.Tensor | None = None,
        cache=None,
        image_features: list[torch.Tensor] | None = None,
        last_only: bool = False,
        **unused,
    ) -> ModelOutput:
        """Inputs as transformers' Qwen2-VL processor makes them. image_features: precomputed
        features of every image and video in order of appearance (the engine's feature cache)."""
        prompt = cache is None or cache.length == 0
        if image_features is not None:
            embeds = self.embed(input_ids, image_features, prompt=prompt)
            features = image_features
        else:
            images = videos = None
            if pixel_values is not None and pixel_values.numel() > 0:
                images = self.encode(pixel_values, image_grid_thw)
            if pixel_values_videos is not None and pixel_values_videos.numel() > 0:
                videos = self.encode(pixel_values_videos, video_grid_thw)
            # each kind at its own placeholders, as the processor orders them: images, then videos
            embeds = self.language_model.embed_tokens(input_ids)  # [B, T, D]
            embeds = splice_image_features(embeds, input_ids, self.image_token_id, images, prompt)
            embeds = splice_image_features(embeds, input_ids, self.video_token_id, videos, prompt)
            features = (images or []) + (videos or []) or None
        if position_ids is None:
            position_ids = self.positions(
                input_ids, attention_mask, image_grid_thw, video_grid_thw, second_per_grid_ts, cache
            )
        lm_inputs = (embeds, attention_mask, position_ids, cache, last_only)
        return self.run_language_model(*lm_inputs, labels, features)
