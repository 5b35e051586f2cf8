"""Search your own images with a dual encoder: index a folder, query it by text or by example image,
and classify an image zero-shot against labels you name.

The vector store is FAISS (faiss-cpu), chosen by measurement against LanceDB and Qdrant's client in
local mode, on 10,000 random unit vectors of 384 dims (single-threaded, one query at a time, on a busy
2-core machine):

    store                 build + save   query p50 / p99   recall@10   delete + add 100   install
    FAISS Flat (IDMap2)        0.04 s     0.3 / 0.6 ms         1.000          0.002 s      66 MB
    LanceDB, no index          0.10 s      17 / 36 ms          1.000          0.009 s     360 MB
    LanceDB IVF-PQ            10-20 s     6-7 / 11-13 ms        0.27                -     (same)
    Qdrant local mode          195 s      6.6 / 11 ms          1.000            4.0 s      45 MB

(install: the wheels and their dependencies, numpy left out.) FAISS is the fastest to build, to query
and to update in place (ids survive other files coming and going), exact by default, and needs only
numpy. At 100,000 vectors its exact scan is still under 20 ms; past that the same `FaissStore` takes
another index_factory string ("IVF4096,Flat" with nprobe, or a PQ variant), faiss's GPU indexes, or
shards over machines (faiss.IndexShards, faiss.contrib.client_server) behind the same add / remove /
search calls. LanceDB's strength is tables on object stores, at 50x the query latency here and five
times the install; Qdrant's local mode is a pure-Python stand-in for its server (a pickled point per
row in SQLite), far too slow to build. Random vectors have no cluster structure, so the approximate
indexes' recall above is their worst case; exact search is the default for a personal collection.

Exact search stays available as the referee: `exact_search` (numpy), and `ExactStore` behind the same
interface (`vislang index --backend exact`).
"""

from .classify import label_embeddings, zero_shot
from .embedder import DEFAULT_MODEL, load_embedder
from .files import IMAGE_EXTENSIONS, find_images
from .index import Hit, ImageIndex, IndexConfig, IndexModelError, UpdateStats, embed_query, model_identity
from .page import results_page
from .store import ExactStore, FaissStore, exact_search

__all__ = [
    "DEFAULT_MODEL",
    "IMAGE_EXTENSIONS",
    "ExactStore",
    "FaissStore",
    "Hit",
    "ImageIndex",
    "IndexConfig",
    "IndexModelError",
    "UpdateStats",
    "embed_query",
    "exact_search",
    "find_images",
    "label_embeddings",
    "load_embedder",
    "model_identity",
    "results_page",
    "zero_shot",
]
