"""BLIP-2 and InstructBLIP inputs, as Blip2Processor and InstructBlipProcessor make them.

The image is squashed to image_size x image_size (bicubic, no crop) and normalized with CLIP's
statistics. Each image stands for num_query_tokens `<image>` tokens placed before everything else,
BOS included: the processors tokenize the text (padding it) and then prepend the image tokens to
every row, so in a left-padded batch the padding sits between the image tokens and the text.
InstructBLIP's Q-Former also reads the instruction, tokenized by its own BERT tokenizer (kept in a
`qformer_tokenizer/` subfolder of a checkpoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .tokenizer import Tokenizer
from .transforms import ImageTransform

# BLIP-2's VQA prompt, one "Question: ... Answer:" per turn; a turn without text (an image alone)
# adds nothing, which leaves the captioning prompt: the image tokens and BOS
BLIP2_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% set text = m['content'] if m['content'] is string else m['content'] | selectattr('type', "
    "'equalto', 'text') | map(attribute='text') | join(' ') %}"
    "{% if m['role'] == 'user' and text %}{{ ' ' if not loop.first }}Question: {{ text }} Answer:"
    "{% elif m['role'] == 'assistant' %} {{ text }}{% endif %}"
    "{% endfor %}"
)

# InstructBLIP was tuned on the bare instruction; earlier turns go before it as plain text
INSTRUCTBLIP_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% set text = m['content'] if m['content'] is string else m['content'] | selectattr('type', "
    "'equalto', 'text') | map(attribute='text') | join(' ') %}"
    "{% if text %}{{ ' ' if not loop.first }}{{ text }}{% endif %}"
    "{% endfor %}"
)


def blip_image_transform(settings: dict, image_size: int) -> ImageTransform:
    """BlipImageProcessor's steps from a preprocessor_config.json (which often leaves out what equals
    its defaults): resize to a square, no center crop, CLIP's mean and std."""
    defaults = {"size": {"height": image_size, "width": image_size}, "do_center_crop": False}
    return ImageTransform.from_dict({**defaults, **{k: v for k, v in settings.items() if v is not None}})


def load_qformer_tokenizer(path: str | Path) -> Tokenizer | None:
    folder = Path(path) / "qformer_tokenizer"
    return Tokenizer.from_dir(folder) if (folder / "tokenizer.json").is_file() else None


def message_text(message: dict) -> str:
    content = message.get("content") or ""
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content if p.get("type") == "text")


def instruction(clean_messages: Sequence[dict]) -> str:
    """What InstructBLIP's Q-Former reads in a chat: the text of the last user message."""
    users = [m for m in clean_messages if m.get("role") == "user"]
    return message_text(users[-1]) if users else ""


def padding_side(tokenizer: Tokenizer) -> str:
    return tokenizer.config.get("padding_side", "right")


def qformer_inputs(
    tokenizer: Tokenizer, texts: Sequence[str], side: str = "right"
) -> dict[str, torch.Tensor]:
    """The Q-Former tokenizer's ids and mask ([CLS] text [SEP]) padded to the longest text. Right
    padding leaves every instruction's positions as they are alone; left padding shifts them."""
    batch = tokenizer.batch_encode(list(texts), padding_side=side)
    return {"qformer_input_ids": batch["input_ids"], "qformer_attention_mask": batch["attention_mask"]}


def processor_inputs(
    texts: Sequence[str],
    images: Sequence | None,
    tokenizer: Tokenizer,
    image_transform: ImageTransform,
    image_token_id: int,
    num_query_tokens: int,
    qformer_tokenizer: Tokenizer | None = None,
) -> dict[str, torch.Tensor]:
    """What Blip2Processor (or, with qformer_tokenizer, InstructBlipProcessor) makes of texts and
    one image per text with padding=True: ids and mask of the padded text, the image tokens prepended
    to every row, pixels, and the Q-Former's own ids and mask of the same texts (the processor pads
    those on the language model tokenizer's side too)."""
    out, side = {}, padding_side(tokenizer)
    if qformer_tokenizer is not None:  # padded on the language model tokenizer's side, as there
        out.update(qformer_inputs(qformer_tokenizer, texts, side))
    text = tokenizer.batch_encode(list(texts), padding_side=side)
    if images is not None:
        if len(images) != len(texts):
            raise ValueError(f"one image per text: got {len(images)} images for {len(texts)} texts")
        B = len(texts)
        image_ids = torch.full((B, num_query_tokens), image_token_id, dtype=torch.long)
        text["input_ids"] = torch.cat([image_ids, text["input_ids"]], dim=1)
        text["attention_mask"] = torch.cat([torch.ones_like(image_ids), text["attention_mask"]], dim=1)
        out["pixel_values"] = image_transform.batch(images)
    return {**text, **out}
