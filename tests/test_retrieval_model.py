"""vislang's retrieval model: its MiniLM text tower against transformers' BertModel (the packaged weights
and a tiny random one, with padding), the cached locked features training reads against the full path,
save and reload, and a short training run that resumes bit for bit."""

import pytest
import torch
from transformers import BertConfig as HFBertConfig
from transformers import BertModel

from vislang.data.world import generate_sample
from vislang.models.retrieval import build_retrieval, load_retrieval, minilm_path
from vislang.processing.tokenizer import Tokenizer
from vislang.text.bert import load_bert, mean_pool
from vislang.train import retrieval as recipe

TEXTS = [
    "Three objects: a small blue square at the top left, a large red circle in the center.",
    "a red circle",
    "a photo of a sandal.",
]


def encode(tokenizer, texts):
    batch = tokenizer.batch_encode(texts, padding_side="right")
    return batch["input_ids"], batch["attention_mask"]


def test_packaged_minilm_matches_transformers():
    path = minilm_path()
    ours, theirs = load_bert(path), BertModel.from_pretrained(path).eval()
    ids, mask = encode(Tokenizer.from_dir(path), TEXTS)
    assert mask.sum(1).tolist()[1] < ids.shape[1]  # padded rows are part of the check
    with torch.no_grad():
        want = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, mask)
    real = mask.bool()
    assert (got - want)[real].abs().max() <= 1e-4
    assert (mean_pool(got, mask) - mean_pool(want, mask)).abs().max() <= 1e-4


def test_tiny_random_bert_matches_transformers(tmp_path):
    torch.manual_seed(0)
    cfg = HFBertConfig(
        vocab_size=90, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    BertModel(cfg).eval().save_pretrained(tmp_path)
    ours, theirs = load_bert(tmp_path), BertModel.from_pretrained(tmp_path).eval()
    ids = torch.randint(1, 90, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    with torch.no_grad():
        diff = ours(ids, mask) - theirs(input_ids=ids, attention_mask=mask).last_hidden_state
    assert diff[mask.bool()].abs().max() <= 1e-5


@pytest.fixture(scope="module")
def model():
    return build_retrieval(seed=0).eval()


def scenes(n, split="test"):
    return [generate_sample("scene", split, 0, i, recipe.CAPTION) for i in range(n)]


def test_cached_locked_states_give_the_full_paths_embeddings(model):
    """Training reads the locked towers' outputs from a cache; the embeddings must be the same."""
    batch = model.tokenize(TEXTS)
    states = model.text_locked(batch["input_ids"], batch["attention_mask"])
    locked = {t: s[: int(n)] for t, s, n in zip(TEXTS, states, batch["attention_mask"].sum(1))}
    with torch.no_grad():
        cached = recipe.text_batch(model, TEXTS, locked)
    full = model.embed(texts=TEXTS)["text_embeds"]
    assert torch.allclose(torch.nn.functional.normalize(cached, dim=-1), full, atol=1e-5)
    images = [s.images[0] for s in scenes(2)]
    pixels = model.image_transform.batch(images)
    with torch.no_grad():
        from_grid = model.image_from_grid(model.image_grid(pixels).half().float())
    assert torch.allclose(
        torch.nn.functional.normalize(from_grid, dim=-1),
        model.embed(images=images)["image_embeds"],
        atol=2e-3,
    )  # the cache keeps grids in fp16


def test_embeddings_are_unit_norm_and_a_wrong_grid_is_refused(model):
    out = model.embed(images=[s.images[0] for s in scenes(2)], texts=["a red circle"])
    assert out["image_embeds"].shape == (2, model.cfg.embed_dim) and out["text_embeds"].shape[0] == 1
    assert torch.allclose(out["image_embeds"].norm(dim=-1), torch.ones(2))
    with pytest.raises(ValueError, match="tokens"):
        model.image_from_grid(torch.zeros(1, 448, 10, 10))


def test_object_phrases_follow_the_caption():
    caption = "Two objects: a small blue square at the top left, and a large red circle in the center."
    assert recipe.object_phrases(caption) == [
        "a small blue square at the top left",
        "a large red circle in the center",
    ]
    for s in scenes(20):
        assert len(recipe.object_phrases(s.answer)) == len(s.objects)


def test_contrastive_loss_spreads_the_target_over_positives():
    logits = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    eye = torch.eye(3, dtype=torch.bool)
    plain = 0.5 * (
        torch.nn.functional.cross_entropy(logits, torch.arange(3))
        + torch.nn.functional.cross_entropy(logits.T, torch.arange(3))
    )
    assert torch.allclose(recipe.contrastive_loss(logits, eye), plain)
    both = eye.clone()
    both[0, 1] = both[1, 0] = True  # two images of one label: each text fits both
    row = -(0.5 * logits[0].log_softmax(0)[0] + 0.5 * logits[0].log_softmax(0)[1])
    manual = (2 * row - logits[2].log_softmax(0)[2]) / 3  # rows 0 and 1 alike by symmetry
    assert torch.allclose(recipe.contrastive_loss(logits, both), manual)


def test_training_resumes_bit_for_bit_and_reloads(tmp_path):
    args = ["--scenes", "24", "--fashion", "4", "--digits", "4", "--eval-scenes", "8", "--batch-size", "8"]
    args += ["--save-every", "2"]
    from vislang.cli import main as vislang_cli

    def train(*argv):
        assert vislang_cli(["train-retrieval", *argv]) == 0

    train("--out", str(tmp_path / "a"), "--steps", "4", *args)
    train("--out", str(tmp_path / "b"), "--steps", "4", "--stop-at", "2", *args)
    assert not (tmp_path / "b" / "trained").exists()
    train("--out", str(tmp_path / "b"), "--steps", "4", "--resume", *args)
    a, b = load_retrieval(tmp_path / "a" / "trained"), load_retrieval(tmp_path / "b" / "trained")
    sa, sb = a.trainable_state(), b.trainable_state()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    fresh = build_retrieval(seed=0).trainable_state()
    assert any(not torch.equal(sa[k], fresh[k]) for k in sa)  # training moved the trained part
    locked = {k for k in a.state_dict() if k.startswith(("vision.", "text.layers.0."))}
    assert locked and not locked & set(sa)  # the locked towers are not saved


def test_recall_at_k_golden():
    """Images e0, e1, e2; texts t0 = t1 = e0 and t2 = e2: a tie with the true pair counts against it."""
    from vislang.eval.retrieval import recall_at_k

    images = torch.eye(3)
    texts = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    got = recall_at_k(images, texts, ks=(1, 2))
    assert got["text_to_image"] == {"R@1": pytest.approx(2 / 3), "R@2": pytest.approx(2 / 3)}
    assert got["image_to_text"] == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3)}


def test_shipped_model_retrieves_held_out_scenes():
    """The model vislang ships, by name: test-split scenes it never saw, found by their captions
    (measured on 1,000: R@1 0.956 text-to-image, 0.936 image-to-text, where scenes with one caption
    tie and a tie counts as a miss; 100 is an easier pool)."""
    import vislang
    from vislang.eval.retrieval import scene_recall

    model = vislang.load("retrieval")
    got = scene_recall(model, 100, seed=0)
    assert got["text_to_image"]["R@1"] >= 0.9 and got["image_to_text"]["R@1"] >= 0.9, got
    assert got["text_to_image"]["R@5"] >= 0.98, got
