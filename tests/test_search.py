"""Image search: an index over a folder, kept in step with it, against exact search; the CLI; zero-shot."""

import base64
import io
import logging
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

import vislang
from search_helpers import CountingEmbedder, FakeEmbedder, clip_folder, draw
from vislang.cli import main
from vislang.search import (
    ExactStore,
    FaissStore,
    ImageIndex,
    IndexConfig,
    IndexModelError,
    embed_query,
    exact_search,
    model_identity,
    zero_shot,
)

N = 8
TEXTS = ["a red circle", "a blue square", "describe it", "hello"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip")
    hf, tokenizer, processor = clip_folder(path)
    return path, vislang.load(path), (hf, tokenizer, processor)


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    paths = [draw(folder / ("nested" if i % 3 == 0 else "") / f"img{i}.png", i) for i in range(N)]
    (folder / "notes.txt").write_text("not an image")
    return folder, [str(p.resolve()) for p in paths]


def build(folder, model, cfg=None):
    index = ImageIndex.create(model_identity(model, "tiny"), cfg)
    index.update(folder, CountingEmbedder(model), batch_size=3, progress=False)
    return index


@pytest.mark.parametrize("backend", ["faiss", "exact"])
def test_image_query_finds_itself_and_results_equal_exact_search(clip, photos, backend):
    _, model, _ = clip
    folder, paths = photos
    index = build(folder, model, IndexConfig(backend=backend))
    assert sorted(index.files) == sorted(paths)  # recursive, images only
    for path in paths:
        hit = index.search(embed_query(model, image=path), k=3)[0][0]
        assert hit.path == path and hit.score == pytest.approx(1.0, abs=1e-5)

    # referee: every file embedded again in one batch, scored by plain numpy
    vectors = model.embed(images=paths)["image_embeds"].numpy()
    queries = np.concatenate([model.embed(texts=TEXTS)["text_embeds"].numpy(), vectors[:3]])
    scores, rows = exact_search(vectors, queries, k=5)
    for hits, want_rows, want_scores in zip(index.search(queries, k=5), rows, scores):
        assert [h.path for h in hits] == [paths[r] for r in want_rows]
        np.testing.assert_allclose([h.score for h in hits], want_scores, atol=1e-5)


def test_faiss_store_equals_exact_store_through_removals():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((500, 24)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    faiss_store, exact = FaissStore(24), ExactStore(24)
    for store in (faiss_store, exact):
        store.add(np.arange(1000, 1500), vectors)
        store.remove(range(1000, 1500, 3))
        store.add(np.arange(2000, 2050), vectors[:50] * -1)
    assert len(faiss_store) == len(exact) == 500 - 167 + 50
    queries = rng.standard_normal((20, 24)).astype(np.float32)
    got, want = faiss_store.search(queries, 10), exact.search(queries, 10)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    assert not np.isin(got[1], np.arange(1000, 1500, 3)).any()
    # more asked than stored: the referee pads with id -1
    small = ExactStore(24, np.array([7]), vectors[:1])
    assert small.search(vectors[:1], 3)[1].tolist() == [[7, -1, -1]]


def test_rerun_embeds_only_new_and_changed_files_and_drops_deleted(clip, photos, tmp_path):
    _, model, _ = clip
    folder, paths = photos
    counter = CountingEmbedder(model)
    index = ImageIndex.create(model_identity(model, "tiny"))
    stats = index.update(folder, counter, progress=False)
    assert (counter.images, stats.added) == (N, N)
    index.save(tmp_path / "index")

    index = ImageIndex.open(tmp_path / "index")
    counter.images = 0
    stats = index.update(folder, counter, progress=False)
    assert (counter.images, stats.added, stats.changed, stats.removed, stats.unchanged) == (0, 0, 0, 0, N)

    added = str(draw(folder / "new.png", 40).resolve())
    changed, deleted = paths[1], paths[2]
    draw(changed, 41)
    os.utime(changed, ns=(1, 1))  # a different fingerprint even if the clock did not move
    os.remove(deleted)
    counter.images = 0
    stats = index.update(folder, counter, progress=False)
    assert counter.images == 2
    assert (stats.added, stats.changed, stats.removed, stats.unchanged) == (1, 1, 1, N - 2)
    index.save(tmp_path / "index")

    index = ImageIndex.open(tmp_path / "index")
    assert len(index) == len(index.store) == N
    assert deleted not in index.files and added in index.files
    everything = [h.path for h in index.search(embed_query(model, text="a red circle"), k=50)[0]]
    assert sorted(everything) == sorted(index.files)  # the deleted file's vector is gone too
    for path in (added, changed):  # the changed file is found by its new content
        hit = index.search(embed_query(model, image=path), k=1)[0][0]
        assert hit.path == path and hit.score == pytest.approx(1.0, abs=1e-5)


def test_corrupt_files_are_skipped_with_a_warning(clip, photos, caplog):
    _, model, _ = clip
    folder, paths = photos
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = (folder / "img0.png") if (folder / "img0.png").exists() else folder / "nested" / "img0.png"
    (folder / "truncated.jpg").write_bytes(good.read_bytes()[:60])
    with caplog.at_level(logging.WARNING, logger="vislang.search"):
        index = ImageIndex.create(model_identity(model, "tiny"))
        stats = index.update(folder, model, batch_size=4, progress=False)
    skipped = sorted(str((folder / n).resolve()) for n in ("broken.png", "truncated.jpg"))
    assert sorted(stats.skipped) == skipped
    assert sorted(index.files) == sorted(paths)
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and all(path in warning[0] for path in skipped)


def test_another_model_is_refused(clip, photos, tmp_path):
    path, model, _ = clip
    folder, _ = photos
    other_path = tmp_path / "other"
    clip_folder(other_path, seed=1)
    index = build(folder, model)
    with pytest.raises(IndexModelError, match="built with"):
        index.check_model(model_identity(vislang.load(other_path), str(other_path)))
    index.check_model(model_identity(model, "the same weights under another name"))

    out = tmp_path / "index"
    assert main(["index", str(folder), "--out", str(out), "--model", str(path)]) == 0
    assert main(["index", str(folder), "--out", str(out), "--model", str(other_path)]) == 2
    assert main(["search", str(out), "a red circle", "--model", str(other_path)]) == 2


def test_cli_index_search_and_html_page(clip, photos, tmp_path, capsys):
    path, model, _ = clip
    folder, paths = photos
    out = tmp_path / "index"
    assert main(["index", str(folder), "--out", str(out), "--model", str(path), "--batch-size", "3"]) == 0
    assert f"indexed {N} images" in capsys.readouterr().out

    assert main(["search", str(out), "a red circle", "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    want = ImageIndex.open(out).search(embed_query(model, text="a red circle"), k=3)[0]
    assert lines == [f"{h.score:.4f}  {h.path}" for h in want]

    page = tmp_path / "results.html"
    assert main(["search", str(out), "--image", paths[4], "-k", "2", "--html", str(page)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(paths[4]) and lines[-1] == f"wrote {page}"
    text = page.read_text()
    thumbs = re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(thumbs) == 3  # the query and two results, all inline
    query_thumb = Image.open(io.BytesIO(base64.b64decode(thumbs[0])))
    assert query_thumb.size == (64, 64)
    assert paths[4] in text and "http" not in text

    assert main(["search", str(out)]) == 2  # neither a text nor an image
    assert main(["search", str(tmp_path / "nowhere"), "x"]) == 2
    assert main(["index", str(folder), "--out", str(out), "--model", str(tmp_path / "nowhere")]) == 2


def test_classify_equals_clip_zero_shot_and_sums_to_one(clip, photos, capsys):
    path, model, (hf, tokenizer, processor) = clip
    _, paths = photos
    labels = ["red circle", "blue square", "hello"]
    probs = zero_shot(model, paths[0], labels, templates=["a {} ."])
    # referee: transformers' CLIP on the same prompts; its logits_per_image softmaxed
    image = Image.open(paths[0]).convert("RGB")
    batch = tokenizer([f"a {label} ." for label in labels], padding=True, return_tensors="pt")
    with torch.no_grad():
        want = hf(**batch, **processor([image], return_tensors="pt")).logits_per_image.softmax(-1)[0]
    np.testing.assert_allclose(list(probs.values()), want.numpy(), atol=1e-4)
    assert list(probs) == labels and sum(probs.values()) == pytest.approx(1.0, abs=1e-6)

    argv = ["classify", paths[0], "--labels", "circle, square,hello", "--model", str(path)]
    assert main([*argv, "--template", "a {} .", "--template", "a red {}"]) == 0
    printed = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert sorted(label for _, label in printed) == ["circle", "hello", "square"]
    assert sum(float(p) for p, _ in printed) == pytest.approx(1.0, abs=2e-4)
    assert [float(p) for p, _ in printed] == sorted((float(p) for p, _ in printed), reverse=True)
    assert main([*argv, "--template", "no slot"]) == 2


def test_classify_picks_the_label_whose_embedding_matches():
    labels = ["cat", "dog", "car"]
    fake = FakeEmbedder(labels, image_label="dog")
    templates = ["a photo of a {}.", "a drawing of a {}."]
    probs = zero_shot(fake, Image.new("RGB", (8, 8)), labels, templates)
    assert max(probs, key=probs.get) == "dog"
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
    # by hand: the averaged, renormalized prompt vectors against the image vector, at scale 100
    text = torch.nn.functional.normalize(
        torch.stack([torch.stack([fake._axis(t.format(lab)) for t in templates]).mean(0) for lab in labels]),
        dim=-1,
    )
    want = torch.softmax(100 * fake._axis("dog") @ text.T, dim=-1)
    np.testing.assert_allclose(list(probs.values()), want.numpy(), atol=1e-6)
