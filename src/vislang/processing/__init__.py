"""Turning user inputs into model inputs: images into pixel tensors, conversations into token ids."""

from vislang.processing.anyres import (
    anyres_batch,
    anyres_grid_shape,
    anyres_preprocess,
    fit_size,
    llava_next_num_image_tokens,
    select_best_resolution,
    unpad_slices,
)
from vislang.processing.chat_template import (
    LLAVA_FALLBACK_CHAT_TEMPLATE,
    compile_chat_template,
    load_chat_template,
    render_chat,
)
from vislang.processing.image import (
    ALLOWED_FORMATS,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    image_header,
    load_image,
)
from vislang.processing.prompt import expand_image_token_ids, expand_image_tokens
from vislang.processing.tokenizer import Tokenizer
from vislang.processing.transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImageTransform

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "LLAVA_FALLBACK_CHAT_TEMPLATE",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "ImageTransform",
    "Tokenizer",
    "anyres_batch",
    "anyres_grid_shape",
    "anyres_preprocess",
    "compile_chat_template",
    "expand_image_token_ids",
    "expand_image_tokens",
    "fit_size",
    "image_header",
    "llava_next_num_image_tokens",
    "load_chat_template",
    "load_image",
    "render_chat",
    "select_best_resolution",
    "unpad_slices",
]
