"""CLIP's and SigLIP's losses against open_clip's ClipLoss and SigLipLoss (values and gradients), against
hand-computed 2x2 cases, and on two processes (gloo) against one process at the same global batch."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from contrastive_worker import VARIANTS, open_clip_losses, train_towers
from vislang.errors import VislangError
from vislang.train.contrastive import ContrastiveConfig, ContrastiveLoss, clip_loss, siglip_loss

WORKER = Path(__file__).with_name("contrastive_worker.py")


@pytest.fixture(autouse=True)
def one_thread():
    """Tensors of a few dozen numbers: a second thread only waits on the first (30x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def oc():
    return open_clip_losses()


def leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def random_pairs(batch: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)


def assert_same(mine: list[torch.Tensor], theirs: list[torch.Tensor]) -> None:
    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "batch, dim, scale, seed", [(8, 16, 1 / 0.07, 0), (5, 3, 1.0, 1), (16, 32, 100.0, 2)]
)
def test_clip_loss_matches_open_clip(oc, batch, dim, scale, seed):
    image, text = random_pairs(batch, dim, seed)
    log_scale = torch.tensor(math.log(scale))
    mine = leaves(image, text, log_scale)
    loss = clip_loss(*mine)
    loss.backward()
    theirs = leaves(image, text, log_scale)
    # open_clip takes normalised features and the scale itself (its models exponentiate)
    ref = oc.ClipLoss()(F.normalize(theirs[0], dim=-1), F.normalize(theirs[1], dim=-1), theirs[2].exp())
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), abs=1e-6)
    assert_same([t.grad for t in mine], [t.grad for t in theirs])
    assert mine[2].grad.abs() > 1e-3  # the scale is learned: its gradient is there and compared


@pytest.mark.parametrize("batch, dim, scale, bias, seed", [(8, 16, 10.0, -10.0, 0), (6, 4, 2.0, 0.5, 1)])
def test_siglip_loss_matches_open_clip(oc, batch, dim, scale, bias, seed):
    image, text = random_pairs(batch, dim, seed)
    log_scale, bias = torch.tensor(math.log(scale)), torch.tensor(bias)
    mine = leaves(image, text, log_scale, bias)
    loss = siglip_loss(*mine)
    loss.backward()
    theirs = leaves(image, text, log_scale, bias)
    normed = F.normalize(theirs[0], dim=-1), F.normalize(theirs[1], dim=-1)
    ref = oc.SigLipLoss()(*normed, theirs[2].exp(), theirs[3])
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), abs=1e-6)
    assert_same([t.grad for t in mine], [t.grad for t in theirs])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# images (1, 0), (0, 1); texts (1, 0), (0.6, 0.8) (unit vectors): similarities [[1, 0.6], [0, 0.8]]
IMAGES_2X2 = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # not unit: the losses normalise
TEXTS_2X2 = torch.tensor([[1.0, 0.0], [3.0, 4.0]])


def test_clip_loss_by_hand():
    # cross-entropy of a row with logits (a, b), the right one a: log(1 + e^(b - a))
    per_image = softplus(0.6 - 1) + softplus(0 - 0.8)  # rows of the similarity matrix
    per_text = softplus(0 - 1) + softplus(0.6 - 0.8)  # its columns
    expected = (per_image / 2 + per_text / 2) / 2
    assert clip_loss(IMAGES_2X2, TEXTS_2X2, torch.tensor(0.0)).item() == pytest.approx(expected, abs=1e-6)
    # scale 2 doubles every logit
    per_image, per_text = softplus(-0.8) + softplus(-1.6), softplus(-2) + softplus(-0.4)
    expected = (per_image + per_text) / 4
    loss = clip_loss(IMAGES_2X2, TEXTS_2X2, torch.tensor(math.log(2.0)))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_siglip_loss_by_hand():
    # logits 2 * sim - 1 = [[1, 0.2], [-1, 0.6]]; -log sigmoid(z) = softplus(-z) on the diagonal,
    # -log sigmoid(-z) = softplus(z) off it; summed, over a batch of 2
    expected = (softplus(-1) + softplus(0.2) + softplus(-1) + softplus(-0.6)) / 2
    loss = siglip_loss(IMAGES_2X2, TEXTS_2X2, torch.tensor(math.log(2.0)), torch.tensor(-1.0))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_scale_is_capped_at_100():
    image, text = random_pairs(4, 8, 3)
    at_cap = clip_loss(image, text, torch.tensor(math.log(100.0)))
    past = torch.tensor(math.log(1000.0), requires_grad=True)
    loss = clip_loss(image, text, past)
    assert loss.item() == pytest.approx(at_cap.item(), abs=1e-6)
    loss.backward()
    assert past.grad == 0  # past the cap the scale gets no gradient: clamp_ must bring it back
    cap = torch.tensor(math.log(100.0), requires_grad=True)
    clip_loss(image, text, cap).backward()
    assert cap.grad != 0  # at the cap itself it still learns (and can come down)

    loss_fn = ContrastiveLoss(ContrastiveConfig(init_scale=50.0))
    with torch.no_grad():
        loss_fn.logit_scale.fill_(math.log(1000.0))
    loss_fn.clamp_()
    assert loss_fn.logit_scale.exp().item() == pytest.approx(100.0, rel=1e-5)


def test_module_starts_as_clip_and_siglip_do():
    clip, siglip = ContrastiveLoss(), ContrastiveLoss(ContrastiveConfig(kind="siglip"))
    assert clip.logit_scale.exp().item() == pytest.approx(1 / 0.07, rel=1e-6) and clip.logit_bias is None
    assert siglip.logit_scale.exp().item() == pytest.approx(10.0, rel=1e-6)
    assert siglip.logit_bias.item() == -10.0
    image, text = random_pairs(4, 8, 4)
    expected = siglip_loss(image, text, torch.tensor(math.log(10.0)), torch.tensor(-10.0))
    assert siglip(image, text).item() == pytest.approx(expected.item(), abs=1e-6)
    assert {n for n, _ in siglip.named_parameters()} == {"logit_scale", "logit_bias"}


def test_bad_input_is_refused():
    with pytest.raises(VislangError, match="same shape"):
        clip_loss(torch.zeros(4, 8), torch.zeros(3, 8), torch.tensor(0.0))
    with pytest.raises(VislangError, match="same shape"):
        siglip_loss(torch.zeros(4, 2, 8), torch.zeros(4, 2, 8), torch.tensor(0.0), torch.tensor(0.0))
    with pytest.raises(VislangError, match="'clip' or 'siglip'"):
        ContrastiveLoss(ContrastiveConfig(kind="infonce"))
    with pytest.raises(VislangError, match="init_scale"):
        ContrastiveLoss(ContrastiveConfig(init_scale=500.0))


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("contrastive") / "two.pt"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")} | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(WORKER), str(out)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return torch.load(out, weights_only=False)


@pytest.mark.parametrize("kind, local_loss", VARIANTS)
def test_two_processes_train_as_one(two_processes, kind, local_loss):
    one_losses, one_weights = train_towers(kind, local_loss)
    two = two_processes[kind, local_loss]
    assert len(two["losses"]) == len(one_losses)
    for a, b in zip(two["losses"], one_losses):
        assert a == pytest.approx(b, abs=1e-6), (two["losses"], one_losses)
    assert one_losses[-1] < one_losses[0] - 1  # it trained: the losses compared are not constants
    assert set(two["weights"]) == set(one_weights)
    for name, w in one_weights.items():
        torch.testing.assert_close(two["weights"][name], w, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind, local_loss", VARIANTS)
def test_each_rank_loss_matches_open_clip(two_processes, kind, local_loss):
    ranks = two_processes[kind, local_loss]["step0"]  # (ours, open_clip's) per rank
    mine, theirs = [m for m, _ in ranks], [t for _, t in ranks]
    if kind == "siglip" and not local_loss:
        # every rank of ours scores the whole batch; open_clip's SigLIP is local: equal on average
        assert mine[0] == mine[1] and sum(mine) / 2 == pytest.approx(sum(theirs) / 2, abs=1e-6)
    else:
        assert mine == pytest.approx(theirs, abs=1e-6)
    if local_loss:
        assert abs(mine[0] - mine[1]) > 1e-3  # the ranks scored different rows
    assert two_processes[kind, local_loss]["losses"][0] == pytest.approx(sum(mine) / 2, abs=1e-6)
