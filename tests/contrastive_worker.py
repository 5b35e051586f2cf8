"""A pair of linear towers trained with the gathered contrastive losses, on one process or several.

    python tests/contrastive_worker.py OUT.pt      # relaunches itself on 2 processes (gloo)

Each rank trains on its shard of one fixed global batch of 8 through DDP; rank 0 saves, per variant,
the per-step losses (mean over ranks), the final weights, and the step-0 loss of every rank next to
open_clip's distributed losses on the same features. test_contrastive.py runs `train_towers` on one
process and compares.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from vislang.train import distributed
from vislang.train.contrastive import ContrastiveConfig, ContrastiveLoss

VARIANTS = [("clip", False), ("clip", True), ("siglip", False), ("siglip", True)]  # (kind, local_loss)
BATCH, IMAGE_DIM, TEXT_DIM, EMBED_DIM = 8, 6, 5, 4
STEPS, LR = 5, 0.05


def open_clip_losses():
    """open_clip's loss module (open_clip/loss.py) on its own: the package's __init__ needs torchvision,
    the losses only torch."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        raise RuntimeError("the tests need open_clip as a referee: pip install --no-deps open-clip-torch")
    path = Path(spec.submodule_search_locations[0]) / "loss.py"
    module_spec = importlib.util.spec_from_file_location("open_clip_loss", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


class Towers(nn.Module):
    def __init__(self, kind: str, local_loss: bool):
        super().__init__()
        self.image = nn.Linear(IMAGE_DIM, EMBED_DIM)
        self.text = nn.Linear(TEXT_DIM, EMBED_DIM)
        self.loss = ContrastiveLoss(ContrastiveConfig(kind=kind, local_loss=local_loss))

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        return self.loss(self.image(images), self.text(texts))


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, IMAGE_DIM, generator=g, dtype=torch.float64)
    return images, torch.randn(BATCH, TEXT_DIM, generator=g, dtype=torch.float64)


def new_towers(kind: str, local_loss: bool) -> Towers:
    torch.manual_seed(1)
    # float64: one process and two sum in different orders, and in float32 the first steps' large
    # gradients carry that rounding past 1e-6 by the fifth step
    return Towers(kind, local_loss).double()


def train_towers(kind: str, local_loss: bool) -> tuple[list[float], dict[str, torch.Tensor]]:
    """SGD steps on this rank's rows of the global batch: (losses as one process logs them, weights)."""
    images, texts = global_batch()
    rows = distributed.shard_rows(range(BATCH))  # strided: the gathered batch is a permutation of it
    model = new_towers(kind, local_loss)
    ddp = distributed.ddp_wrap(model)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    losses = []
    for _ in range(STEPS):
        loss = ddp(images[rows], texts[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.loss.clamp_()
        losses.append(distributed.reduce_mean(loss.item()))
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def step0_against_open_clip(kind: str, local_loss: bool, oc) -> tuple[float, float]:
    """This rank's loss and open_clip's on the same features. open_clip's SigLipLoss is always the
    local form, so the global form is compared through the mean over ranks (done by the caller)."""
    images, texts = global_batch()
    rows = distributed.shard_rows(range(BATCH))
    model = new_towers(kind, local_loss)
    image_emb, text_emb = model.image(images[rows]), model.text(texts[rows])
    mine = model.loss(image_emb, text_emb).item()
    image_emb, text_emb = (
        nn.functional.normalize(image_emb, dim=-1),
        nn.functional.normalize(text_emb, dim=-1),
    )
    scale, rank, world = model.loss.logit_scale.exp(), distributed.rank(), distributed.world_size()
    if kind == "clip":
        ref = oc.ClipLoss(local_loss=local_loss, gather_with_grad=True, rank=rank, world_size=world)
        theirs = ref(image_emb, text_emb, scale)
    else:
        ref = oc.SigLipLoss(rank=rank, world_size=world, dist_impl="gather")
        theirs = ref(image_emb, text_emb, scale, model.loss.logit_bias)
    return mine, theirs.item()


def main(out: Path) -> None:
    distributed.init(torch.device("cpu"))
    # open_clip gathers with torch.distributed.nn's all_gather, deprecated in torch 2.x
    warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
    oc = open_clip_losses()
    results = {}
    for kind, local_loss in VARIANTS:
        losses, weights = train_towers(kind, local_loss)
        pair = step0_against_open_clip(kind, local_loss, oc)
        ranks = [None] * distributed.world_size()
        torch.distributed.all_gather_object(ranks, pair)
        results[kind, local_loss] = {"losses": losses, "weights": weights, "step0": ranks}
    if distributed.is_main():
        torch.save(results, out)
    # gloo aborts a rank now and then when the process group goes while a DDP wrapper still holds it
    # or while the other rank is still talking: free the wrappers and wait for each other first
    gc.collect()
    torch.distributed.barrier()
    distributed.shutdown()


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    if distributed.launched():
        main(out)
    else:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        raise SystemExit(distributed.launch(2, [__file__, str(out)]))
