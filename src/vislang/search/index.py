"""An image index over a folder: one unit vector per image file, kept in step with the folder.

On disk an index is a folder: manifest.json (the model that built it, and per file its id and
fingerprint) beside the vector store's file. Re-running `update` embeds only files that are new or
whose fingerprint changed, and drops files that are gone.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import ImageError, VislangError
from ..processing import load_image
from .files import Fingerprint, find_images, fingerprint
from .store import STORES, new_store

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
# a fixed text whose embedding identifies the model: a name can point at retrained weights, and the
# same weights can move to another folder
PROBE = "a photo of a red circle at the top"
PROBE_TOLERANCE = 1e-3  # max abs difference; thread-count noise is ~1e-6, another model ~1e-1


class IndexModelError(VislangError, ValueError):
    """An index used with a model other than the one that built it: their vectors do not compare."""


@dataclass
class IndexConfig:
    backend: str = "faiss"  # "faiss", or "exact" (numpy, every vector scored)
    factory: str = "Flat"  # faiss.index_factory string: "Flat" is exact; "IVF1024,Flat" for millions
    params: str = ""  # faiss search parameters, e.g. "nprobe=16"


@dataclass
class UpdateStats:
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)  # unreadable images, left out
    embed_seconds: float = 0.0
    index_seconds: float = 0.0


@dataclass
class Hit:
    path: str
    score: float  # cosine similarity


def model_identity(embedder, name: str) -> dict:
    """What the manifest records about a model: its name, embedding size, and its probe embedding."""
    probe = embedder.embed(texts=[PROBE])["text_embeds"][0].float().cpu()
    return {"name": name, "dim": int(probe.numel()), "probe": [round(float(v), 6) for v in probe]}


def same_model(a: dict, b: dict) -> bool:
    if a["dim"] != b["dim"]:
        return False
    return float(np.abs(np.subtract(a["probe"], b["probe"])).max()) <= PROBE_TOLERANCE


def _show_progress(progress: bool) -> bool:
    return progress and not os.environ.get("CI")


class ImageIndex:
    def __init__(self, model: dict, cfg: IndexConfig, store, files: dict | None = None, next_id: int = 0):
        self.model, self.cfg, self.store = model, cfg, store
        self.files: dict[str, dict] = files or {}  # absolute path -> {"id", "size", "mtime_ns"}
        self.next_id = next_id  # ids are never reused, so a stale id can never name another file
        self.root: str | None = None

    @classmethod
    def create(cls, model: dict, cfg: IndexConfig | None = None) -> ImageIndex:
        cfg = cfg or IndexConfig()
        return cls(model, cfg, new_store(cfg.backend, model["dim"], cfg.factory, cfg.params))

    @classmethod
    def open(cls, folder: str | Path) -> ImageIndex:
        folder = Path(folder)
        if not (folder / MANIFEST).is_file():
            raise VislangError(
                f"{folder} is not an image index (no {MANIFEST}); build one with `vislang index`"
            )
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            raise VislangError(f"{folder}: index format {manifest.get('format')} is not {FORMAT}; rebuild it")
        cfg = IndexConfig(**manifest["config"])
        model = manifest["model"]
        store = STORES[cfg.backend].load(folder, model["dim"], cfg.factory, cfg.params)
        index = cls(model, cfg, store, manifest["files"], manifest["next_id"])
        index.root = manifest.get("root")
        return index

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.store.save(folder)
        manifest = dict(
            format=FORMAT,
            model=self.model,
            config=asdict(self.cfg),
            root=self.root,
            next_id=self.next_id,
            files=self.files,
        )
        tmp = folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, folder / MANIFEST)  # a crash mid-write leaves the old manifest

    def __len__(self) -> int:
        return len(self.files)

    def check_model(self, identity: dict) -> None:
        if not same_model(self.model, identity):
            raise IndexModelError(
                f"this index was built with {self.model['name']} ({self.model['dim']}-d) and the model "
                f"given is {identity['name']} ({identity['dim']}-d), whose embeddings differ; "
                "use the same model, or build a new index"
            )

    def update(self, root: str | Path, embedder, batch_size: int = 32, progress: bool = True) -> UpdateStats:
        """Make the index mirror the images under `root`: embed new and changed files, drop gone ones."""
        if batch_size < 1:
            raise VislangError(f"batch size must be at least 1, got {batch_size}")
        stats = UpdateStats()
        found: dict[str, Fingerprint] = {}
        for path in find_images(root):
            try:
                found[str(path)] = fingerprint(path)
            except OSError:  # removed while we listed, or a dangling link
                stats.skipped.append(str(path))
        stale = [p for p, fp in found.items() if p in self.files and not self._matches(p, fp)]
        gone = [p for p in self.files if p not in found]
        was_stale = set(stale)
        todo = [p for p in found if p not in self.files or p in was_stale]

        start = time.perf_counter()
        paths, vectors = self._embed(todo, embedder, batch_size, progress, stats.skipped)
        stats.embed_seconds = time.perf_counter() - start

        start = time.perf_counter()
        # a changed file that no longer reads is dropped too: its old vector shows what is not there
        self.store.remove([self.files.pop(p)["id"] for p in [*gone, *stale]])
        ids = np.arange(self.next_id, self.next_id + len(paths), dtype=np.int64)
        self.store.add(ids, vectors)
        self.next_id += len(paths)
        for path, id_ in zip(paths, ids.tolist()):
            fp = found[path]
            self.files[path] = {"id": id_, "size": fp.size, "mtime_ns": fp.mtime_ns}
        stats.index_seconds = time.perf_counter() - start

        self.root = str(Path(root).resolve())
        stats.changed = sum(p in was_stale for p in paths)
        stats.added = len(paths) - stats.changed
        stats.removed = len(gone)
        stats.unchanged = len(found) - len(todo)
        if stats.skipped:
            log.warning("skipped %d unreadable images: %s", len(stats.skipped), ", ".join(stats.skipped))
        return stats

    def _matches(self, path: str, fp: Fingerprint) -> bool:
        entry = self.files[path]
        return entry["size"] == fp.size and entry["mtime_ns"] == fp.mtime_ns

    def _embed(self, todo, embedder, batch_size, progress, skipped) -> tuple[list[str], np.ndarray]:
        """(paths embedded, their vectors [N, D]); images that do not load go to `skipped`."""
        paths, parts = [], []
        bar = tqdm(total=len(todo), unit="image", desc="embedding", disable=not _show_progress(progress))
        for start in range(0, len(todo), batch_size):
            batch, images = [], []
            for path in todo[start : start + batch_size]:
                try:
                    images.append(load_image(path))  # decoded here, so one bad file costs only itself
                    batch.append(path)
                except ImageError as e:
                    log.info("cannot read %s: %s", path, e)
                    skipped.append(path)
            if images:
                parts.append(embedder.embed(images=images)["image_embeds"].float().cpu().numpy())
                paths += batch
            bar.update(len(todo[start : start + batch_size]))
        bar.close()
        vectors = np.concatenate(parts) if parts else np.zeros((0, self.model["dim"]), np.float32)
        return paths, vectors

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """The k nearest files to each unit-norm query [Q, D], best first."""
        if k < 1:
            raise VislangError(f"k must be at least 1, got {k}")
        by_id = {entry["id"]: path for path, entry in self.files.items()}
        scores, ids = self.store.search(np.asarray(queries, np.float32), min(k, max(len(self), 1)))
        return [
            [Hit(by_id[i], float(s)) for s, i in zip(row_scores, row_ids) if i >= 0]
            for row_scores, row_ids in zip(scores, ids)
        ]


def embed_query(embedder, text: str | None = None, image=None) -> np.ndarray:
    """One unit-norm query [1, D] from a text or an image (path, bytes, PIL)."""
    if (text is None) == (image is None):
        raise VislangError("give a text or an image to search with (one, not both)")
    if text is not None:
        return embedder.embed(texts=[text])["text_embeds"].float().cpu().numpy()
    return embedder.embed(images=[image])["image_embeds"].float().cpu().numpy()
