"""Image search speed and recall: building an index (embedding and indexing timed apart), text-query
latency, and recall@10 of the index against exact search.

    python benchmarks/search.py --vectors-only [--n 10000] [--dim 384] [--factory IVF256,Flat]
    python benchmarks/search.py [--model M] [--n 10000] [--batch-size 64] [--dir images/]

--vectors-only measures the vector store alone on random unit vectors (no model). Otherwise N world
scenes are written as PNG files and indexed with the model: by default vislang's "retrieval" model
where it is installed, else --model is required. Latency is one query at a time, after a warm-up,
as a person searching sees it; recall@10 is the overlap of the index's top 10 with exact search's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vislang.bench import machine
from vislang.data.world import WorldConfig, generate_sample
from vislang.data.world.palette import COLORS, SHAPES
from vislang.errors import VislangError
from vislang.search import FaissStore, ImageIndex, IndexConfig, exact_search, load_embedder, model_identity
from vislang.search.embedder import DEFAULT_MODEL, model_name

PLACES = ["at the top", "at the bottom", "on the left", "on the right", "in the middle"]


def percentiles(seconds: list[float]) -> str:
    p50, p99 = np.percentile(np.array(seconds) * 1e3, [50, 99])
    return f"p50 {p50:7.2f} ms  p99 {p99:7.2f} ms"


def recall_at(k: int, got: np.ndarray, want: np.ndarray) -> float:
    """Mean over queries of |index's top k & exact top k| / k."""
    return float(np.mean([len(set(g[:k]) & set(w[:k])) / k for g, w in zip(got, want)]))


def unit_vectors(rng, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)  # [n, dim]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def timed_queries(search, queries) -> tuple[list[float], list]:
    search(queries[0])  # warm-up
    seconds, results = [], []
    for query in queries:
        start = time.perf_counter()
        results.append(search(query))
        seconds.append(time.perf_counter() - start)
    return seconds, results


def vectors_only(args) -> None:
    rng = np.random.default_rng(args.seed)
    vectors, queries = unit_vectors(rng, args.n, args.dim), unit_vectors(rng, args.queries, args.dim)
    print(f"{args.n} random unit vectors of {args.dim} dims, {args.queries} queries, k={args.k}")
    start = time.perf_counter()
    _, want = exact_search(vectors, queries, args.k)
    print(f"exact (numpy)     all queries in one matmul: {(time.perf_counter() - start) * 1e3:.1f} ms")
    seconds, _ = timed_queries(lambda q: exact_search(vectors, q[None], args.k), queries)
    print(f"exact (numpy)     one at a time: {percentiles(seconds)}")
    for factory in args.factory:
        store = FaissStore(args.dim, factory, args.params if factory != "Flat" else "")
        start = time.perf_counter()
        store.add(np.arange(args.n), vectors)
        build = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            store.save(Path(tmp))
            store = FaissStore.load(Path(tmp), args.dim, factory, store.params)
            save_load = time.perf_counter() - start
        seconds, results = timed_queries(lambda q, s=store: s.search(q[None], args.k)[1][0], queries)
        recall = recall_at(args.k, np.array(results), want)
        churn = max(1, args.n // 100)  # 1% of the collection deleted, as many added
        start = time.perf_counter()
        store.remove(range(churn))
        store.add(np.arange(args.n, args.n + churn), unit_vectors(rng, churn, args.dim))
        update = time.perf_counter() - start
        name = factory + (f" ({store.params})" if store.params else "")
        print(
            f"faiss {name:<24} build {build:6.3f} s  save+load {save_load:5.3f} s  {percentiles(seconds)}  "
            f"recall@{args.k} {recall:.3f}  update {churn}+{churn} {update * 1e3:.1f} ms"
        )


class Recorder:
    """Passes embed calls through and keeps the image vectors, in the order the index assigns ids."""

    def __init__(self, model):
        self.model, self.parts = model, []

    def embed(self, images=None, texts=None):
        out = self.model.embed(images=images, texts=texts)
        if images:
            self.parts.append(out["image_embeds"].float().numpy())
        return out


def write_world(folder: Path, n: int, seed: int) -> float:
    """Scene images 0..n-1 as PNG files (kept if already there); returns seconds spent writing."""
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i in tqdm(range(n), desc="world", unit="image", disable=bool(os.environ.get("CI"))):
        path = folder / f"scene-{i:06d}.png"
        if not path.exists():
            generate_sample("scene", "test", seed, i, WorldConfig()).images[0].save(path)
    return time.perf_counter() - start


def with_images(args, model) -> None:
    folder = Path(args.dir or tempfile.mkdtemp(prefix="vislang-search-"))
    print(f"world scenes: {write_world(folder, args.n, args.seed):.1f} s to write {args.n} into {folder}")
    recorder = Recorder(model)
    index = ImageIndex.create(model_identity(model, model_name(args.model)), IndexConfig())
    stats = index.update(folder, recorder, batch_size=args.batch_size, progress=not os.environ.get("CI"))
    n = len(index)
    print(
        f"build: embedding {stats.embed_seconds:.1f} s ({n / stats.embed_seconds:.1f} images/s), "
        f"index {stats.index_seconds:.3f} s, {len(stats.skipped)} skipped"
    )
    vectors = np.concatenate(recorder.parts)  # [n, P], row i = id i in a fresh index
    by_id = {entry["id"]: path for path, entry in index.files.items()}
    rng = np.random.default_rng(args.seed)
    texts = [
        f"a {rng.choice(list(COLORS))} {rng.choice(SHAPES)} {rng.choice(PLACES)}" for _ in range(args.queries)
    ]

    def text_query(text):
        with torch.inference_mode():
            query = model.embed(texts=[text])["text_embeds"].float().numpy()
        return query, index.search(query, args.k)[0]

    seconds, results = timed_queries(text_query, texts)
    print(f"text query, embed + search: {percentiles(seconds)}")
    queries = np.concatenate([q for q, _ in results])  # [Q, P]
    seconds, _ = timed_queries(lambda q: index.search(q[None], args.k), queries)
    print(f"text query, search only:    {percentiles(seconds)}")
    _, rows = exact_search(vectors, queries, args.k)
    got = [[hit.path for hit in hits] for _, hits in results]
    want = [[by_id[r] for r in row] for row in rows]
    print(f"recall@{args.k} against exact search: {recall_at(args.k, got, want):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors-only", action="store_true", help="random unit vectors, no model")
    parser.add_argument("--n", type=int, default=10_000, help="images (or vectors) in the index")
    parser.add_argument("--dim", type=int, default=384, help="vector size (--vectors-only)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument(
        "--factory",
        action="append",
        help="faiss index_factory string, repeatable (--vectors-only; default Flat, the index's default)",
    )
    parser.add_argument("--params", default="nprobe=16", help="faiss search parameters for non-Flat indexes")
    parser.add_argument("--model", help=f"a dual-encoder checkpoint (default: {DEFAULT_MODEL}, if installed)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dir", help="where the world images go (kept, reused); default a temp folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch and faiss threads")
    args = parser.parse_args()

    if args.threads:
        import faiss

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    print(f"machine   {machine()}")
    if args.vectors_only:
        args.factory = args.factory or ["Flat"]
        vectors_only(args)
        return
    args.model = args.model or DEFAULT_MODEL
    try:
        model = load_embedder(args.model)
    except VislangError as e:
        parser.error(f"{e}" if args.model != DEFAULT_MODEL else f"--model is required here: {e}")
    with_images(args, model)


if __name__ == "__main__":
    main()
