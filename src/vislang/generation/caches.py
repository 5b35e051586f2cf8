"""Caches that let a repeated image skip work: its encoder features, and the prompt's KV up to it.

Both are keyed by a hash of the decoded pixels (not of the file: the same picture re-encoded as
PNG or JPEG-at-quality-100 of equal pixels hits), kept in LRU order under a byte budget.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
import torch


def image_key(image) -> str:
    """A content hash of an RGB PIL image: its size and its pixels."""
    pixels = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{pixels.shape}".encode())
    h.update(pixels.tobytes())
    return h.hexdigest()


def media_key(media, inputs: dict) -> str:
    """A content hash of one image or video (a Media whose source is loaded) and the shape of what
    the processor made of it: a per-request resolution gives other features for the same pixels."""
    h = hashlib.blake2b(digest_size=16)
    h.update(media.kind.encode())
    frames = [media.source] if media.kind == "image" else media.source.frames
    for frame in frames:
        h.update(image_key(frame).encode())
    for name in sorted(inputs):
        value = inputs[name]
        h.update(f"{name}{tuple(value.shape)}".encode())
        if not name.startswith("pixel_values"):  # grids and sizes are small: hash their values
            h.update(value.cpu().numpy().tobytes())
    return h.hexdigest()


def prefix_key(token_ids: list[int], image_keys: list[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray(token_ids, dtype=np.int64).tobytes())
    for k in image_keys:
        h.update(k.encode())
    return h.hexdigest()


def nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    raise TypeError(f"cannot size a {type(value).__name__}")


class LRUBytes:
    """A thread-safe LRU map whose values (tensors or nested lists of them) fit a byte budget."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.items: OrderedDict[str, tuple[object, int]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0
        self.lock = threading.Lock()

    def get(self, key: str):
        with self.lock:
            if key not in self.items:
                self.misses += 1
                return None
            self.hits += 1
            self.items.move_to_end(key)
            return self.items[key][0]

    def put(self, key: str, value) -> None:
        size = nbytes(value)
        if size > self.max_bytes:
            return  # bigger than the whole budget: caching it would evict everything for nothing
        with self.lock:
            if key in self.items:
                self.bytes -= self.items.pop(key)[1]
            self.items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self.items.popitem(last=False)
                self.bytes -= dropped

    def __len__(self) -> int:
        return len(self.items)

    def clear(self) -> None:
        with self.lock:
            self.items.clear()
            self.bytes = 0
