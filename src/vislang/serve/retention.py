"""Opt-in retention of requests, for people who must keep what their model was asked.

Images are stored as PNG re-encoded from their decoded pixels, so EXIF (GPS, camera, owner) and
every other metadata chunk are gone; each file is named by the hash of its content, so the same
image is stored once. A request record (JSON) names the images by hash and holds the text. Videos
are named by the hash of their bytes only and not kept: a container carries metadata (place, device)
that re-encoding frames would be the only way to drop, at a cost out of proportion to a log.
Everything older than the retention period is deleted by `purge` (run by the server at start and
hourly, and by `vislang purge`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

from ..processing import load_image


class Retention:
    def __init__(self, folder: str | Path, days: float):
        if days <= 0:
            raise ValueError(f"retention days must be > 0, got {days}")
        self.folder, self.days = Path(folder), days
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def store(self, messages: list[dict], answer: str) -> Path:
        record = {"time": time.time(), "messages": [], "answer": answer}
        for m in messages:
            content = m["content"]
            if isinstance(content, str):
                record["messages"].append({"role": m["role"], "content": content})
                continue
            parts = []
            for p in content:
                if p["type"] == "image":
                    parts.append({"type": "image", "sha256": self._store_image(p["image"])})
                elif p["type"] == "video":
                    data = p["video"] if isinstance(p["video"], bytes) else repr(p["video"]).encode()
                    parts.append({"type": "video", "sha256": hashlib.sha256(data).hexdigest(), "kept": False})
                else:
                    parts.append(p)
            record["messages"].append({"role": m["role"], "content": parts})
        data = json.dumps(record, sort_keys=True).encode()
        return self._write(hashlib.sha256(data).hexdigest() + ".json", data)

    def _store_image(self, source) -> str:
        buf = io.BytesIO()
        load_image(source).save(buf, format="PNG")  # pixels only: no EXIF, no text chunks
        data = buf.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        self._write(digest + ".png", data)
        return digest

    def _write(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)  # a re-stored image refreshes its time
        return path

    def purge(self, now: float | None = None) -> int:
        """Delete every stored file older than the retention period; returns how many."""
        return purge(self.folder, self.days, now)


def purge(folder: str | Path, days: float, now: float | None = None) -> int:
    cutoff = (now if now is not None else time.time()) - days * 86400
    removed = 0
    for path in Path(folder).glob("*"):
        if path.suffix in (".json", ".png", ".tmp") and path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
