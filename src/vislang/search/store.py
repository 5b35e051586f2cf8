"""Vector stores: unit vectors under int64 ids, searched by inner product (= cosine).

FaissStore is what an index uses; ExactStore is the referee (plain numpy, every vector scored), and
`exact_search` the same referee as one function over an array.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import VislangError


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores [Q, k], rows [Q, k]) of the k best rows of `vectors` [N, D] for each query [Q, D], best
    first; equal scores keep row order. Fewer than k rows: the tail is score -inf, row -1."""
    scores = np.asarray(queries, np.float32) @ np.asarray(vectors, np.float32).T  # [Q, N]
    top = min(k, scores.shape[1])
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    best = np.take_along_axis(scores, rows, axis=1)
    pad = k - top
    if pad:
        rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
        best = np.pad(best, ((0, 0), (0, pad)), constant_values=-np.inf)
    return best, rows


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise VislangError("image search needs FAISS: pip install 'vislang[search]' (faiss-cpu)") from e
    return faiss


class FaissStore:
    """A FAISS index under an id map, so files keep their ids as others come and go.

    `factory` is a faiss.index_factory string: "Flat" (exact, the default) or e.g. "IVF1024,Flat"
    (clustered, trained on the first vectors added) for collections too big to scan. It must support
    removal, which rules out HNSW.
    """

    FILE = "vectors.faiss"

    def __init__(self, dim: int, factory: str = "Flat", params: str = "", index=None):
        faiss = _faiss()
        if "HNSW" in factory.upper():
            raise VislangError(f"index {factory!r} cannot remove vectors; use Flat or IVF...")
        self.dim, self.factory, self.params = dim, factory, params
        if index is None:
            index = faiss.IndexIDMap2(faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT))
        self.index = index
        if params:  # e.g. "nprobe=16": how many IVF clusters a query visits
            faiss.ParameterSpace().set_index_parameters(self.index, params)

    def __len__(self) -> int:
        return self.index.ntotal

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # [N, D]
        if not len(vectors):
            return
        if not self.index.is_trained:
            self.index.train(vectors)
        self.index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))

    def remove(self, ids) -> None:
        if len(ids):
            self.index.remove_ids(np.asarray(list(ids), dtype=np.int64))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [Q, k], ids [Q, k]); missing hits are id -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        return self.index.search(queries, k)

    def save(self, folder: Path) -> None:
        _faiss().write_index(self.index, str(folder / self.FILE))

    @classmethod
    def load(cls, folder: Path, dim: int, factory: str, params: str = "") -> FaissStore:
        return cls(dim, factory, params, index=_faiss().read_index(str(folder / cls.FILE)))


class ExactStore:
    """Every vector in one numpy array, scored on each query: the referee, and a store without FAISS."""

    FILE = "vectors.npz"

    def __init__(self, dim: int, ids: np.ndarray | None = None, vectors: np.ndarray | None = None):
        self.dim = dim
        self.ids = np.zeros(0, np.int64) if ids is None else np.asarray(ids, np.int64)  # [N]
        self.vectors = np.zeros((0, dim), np.float32) if vectors is None else vectors  # [N, D]

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.ids = np.concatenate([self.ids, np.asarray(ids, np.int64)])
        self.vectors = np.concatenate([self.vectors, np.asarray(vectors, np.float32).reshape(-1, self.dim)])

    def remove(self, ids) -> None:
        keep = ~np.isin(self.ids, np.asarray(list(ids), np.int64))
        self.ids, self.vectors = self.ids[keep], self.vectors[keep]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = exact_search(self.vectors, np.reshape(queries, (-1, self.dim)), k)
        return scores, np.append(self.ids, -1)[rows]  # row -1 (no hit) reads the appended -1

    def save(self, folder: Path) -> None:
        np.savez(folder / self.FILE, ids=self.ids, vectors=self.vectors)

    @classmethod
    def load(cls, folder: Path, dim: int, factory: str = "", params: str = "") -> ExactStore:
        data = np.load(folder / cls.FILE)
        return cls(dim, data["ids"], data["vectors"])


STORES = {"faiss": FaissStore, "exact": ExactStore}


def new_store(backend: str, dim: int, factory: str = "Flat", params: str = ""):
    if backend not in STORES:
        raise VislangError(f"unknown search backend {backend!r}; backends: {', '.join(STORES)}")
    return FaissStore(dim, factory, params) if backend == "faiss" else ExactStore(dim)
