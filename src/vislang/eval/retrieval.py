"""How well a dual encoder retrieves and classifies: Recall@k both ways on held-out world scenes with
their canonical captions, and zero-shot accuracy on Fashion-MNIST and MNIST by label prompts.

    vislang eval retrieval [--model retrieval] [--scenes 1000] [--classify 1000] [--json F]
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from ..data.real import FASHION_LABELS, load_digits, load_fashion, upscale
from ..data.world import WorldConfig, generate_sample

CAPTION = WorldConfig(qtypes=("caption",))
FASHION_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a {}.")
DIGIT_TEMPLATES = ("a photo of the digit {}.", "a handwritten {}.", "a picture of a {}.")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def recall_at_k(image_embeds: torch.Tensor, text_embeds: torch.Tensor, ks=(1, 5, 10)) -> dict:
    """Unit-norm [N, P] embeddings where pair i is the truth -> Recall@k text-to-image and back.
    A tie with the true pair counts against it."""
    sim = text_embeds.float() @ image_embeds.float().T  # [texts, images]
    truth = torch.arange(len(sim))
    out = {}
    for name, s in (("text_to_image", sim), ("image_to_text", sim.T)):
        rank = (s >= s[truth, truth][:, None]).sum(1) - 1  # how many others score at least as high
        out[name] = {f"R@{k}": float((rank < k).float().mean()) for k in ks}
    return out


def scene_recall(model, n: int, seed: int = 0, batch: int = 64, progress: bool = False) -> dict:
    """Recall@1/5/10 over n test-split scenes and their canonical captions."""
    images, captions = [], []
    for i in range(n):
        s = generate_sample("scene", "test", seed, i, CAPTION)
        images.append(s.images[0])
        captions.append(s.answer)
    img = torch.cat(
        [
            model.embed(images=images[i : i + batch])["image_embeds"]
            for i in tqdm(range(0, n, batch), desc="scenes", disable=not progress)
        ]
    )
    txt = model.embed(texts=captions)["text_embeds"]
    return {"n": n, **recall_at_k(img, txt)}


def label_accuracy(model, dataset: str, n: int, batch: int = 64, progress: bool = False) -> dict:
    """Zero-shot accuracy on the first n images of a test set: the label whose averaged prompt
    embedding is nearest."""
    from ..search.classify import label_embeddings

    if dataset == "fashion":
        images, labels = load_fashion("test")
        names, templates = list(FASHION_LABELS), FASHION_TEMPLATES
    else:
        images, labels = load_digits("test")
        names, templates = [str(d) for d in range(10)], DIGIT_TEMPLATES
    text = label_embeddings(model, names, templates)  # [L, P]
    right = 0
    for i in tqdm(range(0, n, batch), desc=dataset, disable=not progress):
        chunk = [upscale(im, 224, 224) for im in images[i : min(n, i + batch)]]
        guess = (model.embed(images=chunk)["image_embeds"].float() @ text.T).argmax(1).numpy()
        right += int((guess == labels[i : i + len(chunk)].astype(np.int64)).sum())
    return {"n": n, "accuracy": right / n, "chance": 1 / len(names)}
