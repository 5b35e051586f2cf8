"""Image-text matching (ITM) as in BLIP: a head that says whether an image and a text belong together,
trained on the true pairs and on hard negatives mined from the contrastive similarities.

    sim = logit_scale.exp() * image_emb @ text_emb.T       # [B, B], from the contrastive step
    out = itm_loss(head, image_tokens, text_tokens, sim, generator=g)
    out.loss.backward()

Random negatives are too easy once the contrastive loss has trained a little: almost any other text
is plainly wrong. Sampling each image's negative text in proportion to softmax(sim) over the other
texts picks the ones the dual encoder confuses most often, without always taking the single hardest
(which may be an unlabelled true match). Everything here takes tensors, not a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VislangError

MATCH = 1  # the logit index (and label) of a matching pair; 0 is "no match"


@dataclass
class ITMConfig:
    image_dim: int
    text_dim: int
    hidden: int = 128
    heads: int = 4


def _tokens(x: torch.Tensor, mask: torch.Tensor | None, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, D] (an embedding: one token) or [B, N, D] -> ([B, N, D], bool mask [B, N], True = real)."""
    if x.ndim == 2:
        x = x[:, None]
    if x.ndim != 3:
        raise VislangError(f"ITM {what} must be [B, D] or [B, N, D], got {tuple(x.shape)}")
    if mask is None:
        return x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if mask.shape != x.shape[:2]:
        raise VislangError(f"ITM {what} mask must be {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
    if not mask.any(dim=1).all():
        raise VislangError(f"ITM {what} mask leaves a row with no token")
    return x, mask.bool()


class ITMHead(nn.Module):
    """(image, text) pairs -> logits [B, 2] (index MATCH = they belong together).

    The text tokens attend to the image tokens (one pre-norm cross-attention block with an MLP, as in
    BLIP's text encoder, cut to one layer), and the mean of the real text tokens is classified. Image
    and text may be tokens [B, N, D] with optional masks [B, N] or single embeddings [B, D].
    """

    def __init__(self, cfg: ITMConfig):
        super().__init__()
        if cfg.hidden % cfg.heads:
            raise VislangError(f"ITM hidden {cfg.hidden} is not a multiple of heads {cfg.heads}")
        self.cfg = cfg
        h = cfg.hidden
        self.image_in, self.text_in = nn.Linear(cfg.image_dim, h), nn.Linear(cfg.text_dim, h)
        self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(h), nn.LayerNorm(h), nn.LayerNorm(h)
        self.q, self.kv, self.o = nn.Linear(h, h), nn.Linear(h, 2 * h), nn.Linear(h, h)
        self.mlp = nn.Sequential(nn.Linear(h, 4 * h), nn.GELU(), nn.Linear(4 * h, h))
        self.classify = nn.Linear(h, 2)

    def forward(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        image, image_mask = _tokens(image, image_mask, "image")
        text, text_mask = _tokens(text, text_mask, "text")
        if image.shape[0] != text.shape[0]:
            raise VislangError(f"ITM needs as many images as texts, got {image.shape[0]} and {text.shape[0]}")
        B, Nt, H = text.shape[0], text.shape[1], self.cfg.heads
        x = self.text_in(text)  # [B, Nt, h]
        q = self.q(self.norm_q(x)).view(B, Nt, H, -1).transpose(1, 2)  # [B, H, Nt, h/H]
        kv = self.kv(self.norm_kv(self.image_in(image)))  # [B, Ni, 2h]
        k, v = kv.view(B, kv.shape[1], 2 * H, -1).transpose(1, 2).chunk(2, dim=1)  # [B, H, Ni, h/H] each
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=image_mask[:, None, None, :])
        x = x + self.o(attended.transpose(1, 2).reshape(B, Nt, -1))
        x = x + self.mlp(self.norm_mlp(x))
        weights = text_mask.to(x.dtype)[..., None]  # [B, Nt, 1]: padding out of the mean
        return self.classify((x * weights).sum(1) / weights.sum(1))  # [B, 2]


def mine_hard_negatives(
    sim: torch.Tensor,
    generator: torch.Generator | None = None,
    positive_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One negative per image and one per text, drawn in proportion to softmax(sim) over the
    non-matching side.

    sim [B, B]: image i against text j, as logits (the scaled similarities of the contrastive loss).
    positive_mask [B, B] bool: the pairs that match, never drawn (default: the diagonal; pass
    ids[:, None] == ids[None, :] when a batch holds several captions of one image).
    Returns (negative text for each image [B], negative image for each text [B]).
    """
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise VislangError(f"ITM mining needs a square [B, B] similarity matrix, got {tuple(sim.shape)}")
    if positive_mask is None:
        positive_mask = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    if positive_mask.shape != sim.shape:
        raise VislangError(f"positive_mask must be {tuple(sim.shape)}, got {tuple(positive_mask.shape)}")
    positive_mask = positive_mask.bool()
    if positive_mask.all(dim=1).any() or positive_mask.all(dim=0).any():
        raise VislangError("ITM mining: an image or text matches the whole batch and has no negative to draw")
    sim = sim.detach().float()
    # masked before the softmax: the weights are then exactly softmax over the negatives
    image_to_text = sim.masked_fill(positive_mask, float("-inf")).softmax(dim=1)
    text_to_image = sim.T.masked_fill(positive_mask.T, float("-inf")).softmax(dim=1)
    negative_text = torch.multinomial(image_to_text, 1, generator=generator).squeeze(1)
    negative_image = torch.multinomial(text_to_image, 1, generator=generator).squeeze(1)
    return negative_text, negative_image


@dataclass
class ITMOutput:
    loss: torch.Tensor
    logits: torch.Tensor  # [3B, 2]: true pairs, (mined image, text j), (image i, mined text)
    labels: torch.Tensor  # [3B]: MATCH for the first B, 0 after
    negative_text: torch.Tensor  # [B]
    negative_image: torch.Tensor  # [B]


def itm_loss(
    head: nn.Module,
    image: torch.Tensor,
    text: torch.Tensor,
    sim: torch.Tensor,
    generator: torch.Generator | None = None,
    image_mask: torch.Tensor | None = None,
    text_mask: torch.Tensor | None = None,
    positive_mask: torch.Tensor | None = None,
) -> ITMOutput:
    """Cross-entropy of the head over the B true pairs and 2B mined negatives (BLIP's 1:2 mix).

    image [B, Ni, Di] or [B, Di], text [B, Nt, Dt] or [B, Dt], row i of each forming a true pair;
    sim [B, B] as for `mine_hard_negatives`; the masks as for ITMHead."""
    if image.shape[0] != text.shape[0] or sim.shape[:1] != image.shape[:1]:
        raise VislangError(
            f"ITM: {image.shape[0]} images, {text.shape[0]} texts and a {tuple(sim.shape)} similarity matrix"
        )
    negative_text, negative_image = mine_hard_negatives(sim, generator, positive_mask)

    # three blocks of B pairs: (image i, text i), (mined image, text j), (image i, mined text)
    images = torch.cat([image, image[negative_image], image])
    texts = torch.cat([text, text, text[negative_text]])
    image_masks = (
        None if image_mask is None else torch.cat([image_mask, image_mask[negative_image], image_mask])
    )
    text_masks = None if text_mask is None else torch.cat([text_mask, text_mask, text_mask[negative_text]])
    logits = head(images, texts, image_masks, text_masks)  # [3B, 2]
    B = image.shape[0]
    labels = torch.zeros(3 * B, dtype=torch.long, device=logits.device)
    labels[:B] = MATCH
    return ITMOutput(F.cross_entropy(logits, labels), logits, labels, negative_text, negative_image)
