"""vislang: vision-language models in one small PyTorch library.

import vislang
model = vislang.load("path/to/hf-checkpoint")   # LLaVA-1.5, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL, CLIP
reply = model.chat([{"role": "user", "content": [
    {"type": "image", "image": "photo.jpg"}, {"type": "text", "text": "What is this?"}]}])
"""

from .errors import (
    CheckpointError,
    ImageError,
    ImageTokenMismatchError,
    ImageTooLargeError,
    PromptTooLongError,
    UnsupportedModelError,
    VislangError,
)
from .loading import load

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ImageError",
    "ImageTokenMismatchError",
    "ImageTooLargeError",
    "PromptTooLongError",
    "UnsupportedModelError",
    "VislangError",
    "__version__",
    "load",
]
