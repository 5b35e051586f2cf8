"""Image-text matching: the head's shapes and masks, hard-negative mining (never the positive, in
proportion to softmax(sim), reproducible), and the loss learning a toy matching problem."""

from __future__ import annotations

import math

import pytest
import torch

from vislang.errors import VislangError
from vislang.train.itm import MATCH, ITMConfig, ITMHead, itm_loss, mine_hard_negatives


@pytest.fixture(autouse=True)
def one_thread():
    """Tensors of a few dozen numbers: a second thread only waits on the first (30x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def head(image_dim: int = 6, text_dim: int = 5, hidden: int = 16) -> ITMHead:
    torch.manual_seed(0)
    return ITMHead(ITMConfig(image_dim=image_dim, text_dim=text_dim, hidden=hidden, heads=4))


def test_head_shapes_tokens_and_embeddings():
    h = head()
    assert h(torch.randn(3, 7, 6), torch.randn(3, 4, 5)).shape == (3, 2)
    assert h(torch.randn(3, 6), torch.randn(3, 5)).shape == (3, 2)  # one embedding each
    assert h(torch.randn(3, 7, 6), torch.randn(3, 5)).shape == (3, 2)


def test_head_ignores_padding():
    h = head()
    image, text = torch.randn(2, 5, 6), torch.randn(2, 4, 5)
    image_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    text_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    logits = h(image, text, image_mask, text_mask)
    noisy_image, noisy_text = image.clone(), text.clone()
    noisy_image[0, 3:] = 100.0
    noisy_text[0, 2:] = -100.0
    torch.testing.assert_close(h(noisy_image, noisy_text, image_mask, text_mask), logits, rtol=0, atol=1e-6)
    # and the rows without padding are the same as with no mask at all
    torch.testing.assert_close(h(image[1:], text[1:]), logits[1:], rtol=0, atol=1e-6)
    assert not torch.allclose(h(noisy_image, noisy_text), logits)  # unmasked, the padding does count


def test_head_refuses_bad_input():
    h = head()
    with pytest.raises(VislangError, match="as many images as texts"):
        h(torch.randn(3, 6), torch.randn(2, 5))
    with pytest.raises(VislangError, match="mask must be"):
        h(torch.randn(3, 4, 6), torch.randn(3, 5), image_mask=torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(VislangError, match="no token"):
        h(torch.randn(2, 6), torch.randn(2, 3, 5), text_mask=torch.tensor([[1, 0, 0], [0, 0, 0]]))
    with pytest.raises(VislangError, match="square"):
        mine_hard_negatives(torch.randn(3, 4))
    with pytest.raises(VislangError, match="no negative"):
        mine_hard_negatives(torch.randn(1, 1))


def test_mining_never_picks_the_positive():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        sim = 5 * torch.randn(6, 6, generator=g) + 20 * torch.eye(6)  # positives the most similar
        neg_text, neg_image = mine_hard_negatives(sim, g)
        assert (neg_text != torch.arange(6)).all() and (neg_image != torch.arange(6)).all()
    # several captions of one image: every caption of it counts as positive
    ids = torch.tensor([0, 0, 1, 2, 2, 3])
    same = ids[:, None] == ids[None, :]
    for _ in range(200):
        neg_text, neg_image = mine_hard_negatives(torch.randn(6, 6, generator=g), g, positive_mask=same)
        assert (ids[neg_text] != ids).all() and (ids[neg_image] != ids).all()


def test_mining_takes_the_hardest_negative_when_it_stands_out():
    B = 5
    hardest_text = torch.tensor([3, 0, 4, 1, 2])  # for each image
    sim = torch.zeros(B, B)
    sim[torch.arange(B), hardest_text] = 40.0
    sim += 100 * torch.eye(B)  # the positive is more similar still, and masked
    neg_text, neg_image = mine_hard_negatives(sim, torch.Generator().manual_seed(1))
    assert neg_text.tolist() == hardest_text.tolist()
    # text j's hardest image is the image i whose hardest text is j
    assert neg_image.tolist() == torch.argsort(hardest_text).tolist()


def test_mining_draws_in_proportion_to_softmax():
    sim = torch.tensor(
        [[9.0, 1.0, 0.0, 2.0], [0.5, 9.0, 1.5, -1.0], [0.0, 0.0, 9.0, 0.0], [2.0, 1.0, 0.0, 9.0]]
    )
    g = torch.Generator().manual_seed(2)
    draws = 4000
    counts = torch.zeros(4, 4)
    for _ in range(draws):
        neg_text, _ = mine_hard_negatives(sim, g)
        counts[torch.arange(4), neg_text] += 1
    for i in range(4):  # softmax over the other texts, by hand
        others = {j: math.exp(sim[i, j].item()) for j in range(4) if j != i}
        total = sum(others.values())
        for j, weight in others.items():
            assert counts[i, j].item() / draws == pytest.approx(weight / total, abs=0.03), (i, j)


def test_mining_is_reproducible_with_a_generator():
    sim = torch.randn(8, 8, generator=torch.Generator().manual_seed(3))
    runs = [
        [mine_hard_negatives(sim, g) for _ in range(5)]
        for g in (torch.Generator().manual_seed(7), torch.Generator().manual_seed(7))
    ]
    for (t1, i1), (t2, i2) in zip(*runs):
        assert torch.equal(t1, t2) and torch.equal(i1, i2)
    other = [mine_hard_negatives(sim, torch.Generator().manual_seed(8)) for _ in range(1)]
    assert any(not torch.equal(a[0], b[0]) or not torch.equal(a[1], b[1]) for a, b in zip(runs[0], other * 5))


def test_loss_pairs_and_labels():
    h = head()
    g = torch.Generator().manual_seed(4)
    image, text, sim = torch.randn(4, 3, 6), torch.randn(4, 2, 5), torch.randn(4, 4)
    text_mask = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 0]], dtype=torch.bool)
    out = itm_loss(h, image, text, sim, g, text_mask=text_mask)
    assert out.logits.shape == (12, 2) and out.labels.tolist() == [MATCH] * 4 + [0] * 8
    # the same pairs assembled by hand, scored one at a time
    pairs = [(i, i) for i in range(4)]
    pairs += [(out.negative_image[j].item(), j) for j in range(4)]
    pairs += [(i, out.negative_text[i].item()) for i in range(4)]
    for row, (i, j) in enumerate(pairs):
        alone = h(image[i : i + 1], text[j : j + 1], text_mask=text_mask[j : j + 1])
        torch.testing.assert_close(out.logits[row : row + 1], alone, rtol=0, atol=1e-5)
    expected = torch.nn.functional.cross_entropy(out.logits, out.labels)
    assert torch.isfinite(out.loss) and out.loss.item() == pytest.approx(expected.item(), abs=1e-6)


def test_loss_learns_a_toy_matching_problem():
    # each text is a fixed linear map of its image plus a little noise: separable, but only by
    # comparing the two; the contrastive similarities come from undoing the map
    torch.manual_seed(0)
    n, dim = 64, 8
    images = torch.randn(n, dim)
    mix = torch.linalg.qr(torch.randn(dim, dim))[0]
    texts = images @ mix + 0.05 * torch.randn(n, dim)
    h = head(image_dim=dim, text_dim=dim, hidden=32)
    opt = torch.optim.Adam(h.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(5)
    losses = []
    for _ in range(150):
        batch = torch.randperm(n, generator=g)[:16]
        image, text = images[batch], texts[batch]
        sim = (
            5
            * torch.nn.functional.normalize(image, dim=-1)
            @ torch.nn.functional.normalize(text @ mix.T, dim=-1).T
        )
        out = itm_loss(h, image, text, sim, g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        assert torch.isfinite(out.loss)
        losses.append(out.loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)
    with torch.no_grad():  # and it tells true pairs from negatives drawn evenly (a flat similarity)
        out = itm_loss(h, images, texts, 5 * torch.eye(n), torch.Generator().manual_seed(6))
        accuracy = (out.logits.argmax(1) == out.labels).float().mean().item()
    assert accuracy > 0.9, accuracy
