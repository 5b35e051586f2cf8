"""Search results as one self-contained HTML page: thumbnails inline as data URLs, nothing fetched."""

from __future__ import annotations

import base64
import html
import io

from ..errors import ImageError
from ..processing import load_image

THUMB = 256  # longest side, pixels


def thumbnail_url(source) -> str | None:
    """A JPEG data URL of a small copy of the image, or None if it no longer reads."""
    try:
        image = load_image(source)
    except ImageError:
        return None
    image.thumbnail((THUMB, THUMB))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(url: str | None, caption: str) -> str:
    picture = f'<img src="{url}" alt="">' if url else '<div class="gone">unreadable</div>'
    return f"<figure>{picture}<figcaption>{caption}</figcaption></figure>"


def results_page(query: str, hits, query_image=None) -> str:
    """The page for one query: the query (and its image), then each hit with its rank, score and path."""
    cards = [
        _figure(thumbnail_url(hit.path), f"{rank}. {hit.score:.3f}<br><code>{html.escape(hit.path)}</code>")
        for rank, hit in enumerate(hits, 1)
    ]
    asked = _figure(thumbnail_url(query_image), "query") if query_image is not None else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vislang search: {html.escape(query)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 1rem; }}
figure {{ margin: 0; width: {THUMB}px; }}
img, .gone {{ max-width: {THUMB}px; max-height: {THUMB}px; border: 1px solid #ccc; }}
.gone {{ width: {THUMB}px; height: 4rem; display: grid; place-items: center; color: #888; }}
figcaption {{ font-size: 0.85rem; overflow-wrap: anywhere; }}
</style></head><body>
<h1>{html.escape(query)}</h1>
{asked}
<div class="grid">
{chr(10).join(cards)}
</div>
</body></html>
"""
