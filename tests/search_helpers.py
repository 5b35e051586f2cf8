"""Builders for the search tests: a complete tiny random CLIP folder, drawn images, counting and fake
embedders."""

import torch
from PIL import Image, ImageDraw

from tiny import clip_folder  # noqa: F401  (re-exported for the search tests)

COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"]


def draw(path, i: int, size: int = 64):
    """Image number i: a shape whose colour, kind, place and background all vary with i."""
    background = COLORS[(i * 3 + 1) % len(COLORS)]
    image = Image.new("RGB", (size, size), background)
    pen = ImageDraw.Draw(image)
    x, y = (i * 13) % (size - 24), (i * 29) % (size - 24)
    box = (x, y, x + 20 + i % 4, y + 20 + (i * 7) % 5)
    color = COLORS[i % len(COLORS)] if COLORS[i % len(COLORS)] != background else "gray"
    (pen.ellipse if i % 2 else pen.rectangle)(box, fill=color)
    pen.line((0, i % size, size, (i * 5) % size), fill=COLORS[(i + 2) % len(COLORS)], width=2)
    image.save(path)
    return path


class CountingEmbedder:
    """A model whose embed calls are counted: how many images it was asked to embed, in all."""

    def __init__(self, model):
        self.model, self.images = model, 0

    def embed(self, images=None, texts=None):
        self.images += len(images or ())
        return self.model.embed(images=images, texts=texts)


class FakeEmbedder:
    """Texts mentioning a label map to that label's axis; every image maps to the `image_label` axis."""

    def __init__(self, labels, image_label):
        self.labels, self.image_label = labels, image_label

    def _axis(self, text):
        vec = torch.full((len(self.labels) + 1,), 0.1)
        for j, label in enumerate(self.labels):
            if label in text:
                vec[j] = 1.0
        vec[-1] = 0.5 if "photo" in text else 0.0  # templates differ, so averaging them matters
        return torch.nn.functional.normalize(vec, dim=0)

    def embed(self, images=None, texts=None):
        out = {}
        if texts:
            out["text_embeds"] = torch.stack([self._axis(t) for t in texts])
        if images:
            out["image_embeds"] = torch.stack([self._axis(self.image_label) for _ in images])
        return out
