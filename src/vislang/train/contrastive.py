"""Contrastive losses of dual encoders: CLIP's symmetric InfoNCE and SigLIP's pairwise sigmoid loss.

    loss_fn = ContrastiveLoss(ContrastiveConfig(kind="siglip"))
    loss = loss_fn(image_emb, text_emb)   # [B, D] each; pair i is (image i, text i)
    loss.backward(); opt.step(); loss_fn.clamp_()

Both score every image against every text by cosine similarity times a learnable scale, kept as its
log (`logit_scale`, the name CLIP and SigLIP checkpoints use) so that it stays positive, and capped
at 100 as CLIP does: past that the softmax saturates and training turns unstable.

Under torch.distributed each rank holds a shard of the batch, and the losses gather the embeddings
so that every image meets every text of the global batch. The gather keeps its gradient: what one
rank's loss asks of another rank's embeddings flows back to that rank. That way the average of the
ranks' gradients (what DDP computes) is the one-process gradient of the global batch, for the towers
and the scale alike. Two forms:
  global (default): every rank scores the whole global batch and gets the global loss;
  local_loss=True:   a rank scores its own rows against every column (labels offset by rank * B),
                     and the mean of the ranks' losses is the global loss: W times less compute.
SigLIP uses the same all-gather (not open_clip's neighbour exchange): the texts of every rank are
gathered once, which is simple and as exact; its cost is a [B, W*B] logit block per rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..errors import VislangError

MAX_SCALE = 100.0  # CLIP's cap on exp(logit_scale)


class _Gather(torch.autograd.Function):
    """all_gather whose backward hands each rank the gradient of its own shard, summed over every
    rank's loss: another rank's loss depends on this rank's embeddings too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        shards = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(shards, x.contiguous())
        return torch.cat(shards)  # [W*B, D]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # a reduce-scatter in effect; all_reduce is what every backend has
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def gather(x: torch.Tensor) -> torch.Tensor:
    """[B, D] on each rank -> [W*B, D], rank 0's rows first, differentiable; x itself on one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    if any(int(s) != x.shape[0] for s in sizes):
        raise VislangError(
            f"contrastive loss: every rank needs the same local batch, got {[int(s) for s in sizes]}"
        )
    return _Gather.apply(x)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _scale(logit_scale: torch.Tensor, max_scale: float) -> torch.Tensor:
    # clamped in log space: the gradient still flows at the cap itself (clamp_ keeps it there)
    return logit_scale.clamp(max=math.log(max_scale)).exp()


def _check(image_emb: torch.Tensor, text_emb: torch.Tensor) -> None:
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
        raise VislangError(
            "contrastive loss: image and text embeddings must both be [B, D] with the same shape, "
            f"got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )


def clip_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    local_loss: bool = False,
    max_scale: float = MAX_SCALE,
) -> torch.Tensor:
    """CLIP's InfoNCE: cross-entropy of each image over the texts and of each text over the images,
    averaged. Embeddings [B, D] (not yet normalised); logit_scale: the log of the scale, a scalar."""
    _check(image_emb, text_emb)
    image, text = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
    all_image, all_text = gather(image), gather(text)
    first = _rank() * image.shape[0]  # where this rank's matches start among the columns
    if not local_loss:  # every rank scores the whole global batch
        image, text, first = all_image, all_text, 0
    scale = _scale(logit_scale, max_scale)
    logits_per_image = scale * image @ all_text.T  # [rows, W*B]
    logits_per_text = scale * text @ all_image.T  # [rows, W*B]
    labels = torch.arange(first, first + image.shape[0], device=image.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def siglip_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    local_loss: bool = False,
    max_scale: float = MAX_SCALE,
) -> torch.Tensor:
    """SigLIP's loss: every (image, text) pair is its own binary question, label +1 for the matching
    pair and -1 for the others; -log sigmoid(label * logit) summed over pairs, divided by the batch.

    With local_loss each rank divides its rows' sum by its own batch: the mean over ranks is then the
    global sum over the global batch, as with one process.
    """
    _check(image_emb, text_emb)
    image, text = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
    all_text = gather(text)
    first = _rank() * image.shape[0]
    if not local_loss:
        image, first = gather(image), 0
    logits = _scale(logit_scale, max_scale) * image @ all_text.T + logit_bias  # [rows, W*B]
    rows = torch.arange(image.shape[0], device=image.device)
    labels = -torch.ones_like(logits)
    labels[rows, rows + first] = 1.0
    return -F.logsigmoid(labels * logits).sum() / image.shape[0]


@dataclass
class ContrastiveConfig:
    kind: str = "clip"  # "clip" or "siglip"
    init_scale: float | None = None  # exp(logit_scale) at the start: CLIP 1/0.07, SigLIP 10
    init_bias: float = -10.0  # SigLIP only: starts every pair far on the "no match" side
    max_scale: float = MAX_SCALE
    local_loss: bool = False


class ContrastiveLoss(nn.Module):
    """The loss with its learnable logit_scale (and SigLIP's logit_bias) as parameters."""

    def __init__(self, cfg: ContrastiveConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ContrastiveConfig()
        if cfg.kind not in ("clip", "siglip"):
            raise VislangError(f"contrastive loss kind must be 'clip' or 'siglip', got {cfg.kind!r}")
        init_scale = cfg.init_scale or (1 / 0.07 if cfg.kind == "clip" else 10.0)
        if not 0 < init_scale <= cfg.max_scale:
            raise VislangError(f"init_scale must be in (0, {cfg.max_scale}], got {init_scale}")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(cfg.init_bias)) if cfg.kind == "siglip" else None

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if self.logit_bias is None:
            return clip_loss(image_emb, text_emb, self.logit_scale, cfg.local_loss, cfg.max_scale)
        return siglip_loss(
            image_emb, text_emb, self.logit_scale, self.logit_bias, cfg.local_loss, cfg.max_scale
        )

    @torch.no_grad()
    def clamp_(self) -> None:
        """After each optimizer step, as CLIP does: the scale never sits past the cap, where its
        gradient would be zero and it could never come back."""
        self.logit_scale.clamp_(max=math.log(self.cfg.max_scale))
