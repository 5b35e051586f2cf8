"""The model families vislang implements, by their config.json model_type."""

from ..config import ClipConfig, LlavaConfig
from .chat import Reply
from .clip import Clip
from .llava import Llava
from .llava_next import LlavaNext

# model_type -> (config class, model class)
MODEL_TYPES = {
    "llava": (LlavaConfig, Llava),
    "llava_next": (LlavaConfig, LlavaNext),
    "clip": (ClipConfig, Clip),
}

__all__ = ["MODEL_TYPES", "Clip", "Llava", "LlavaNext", "Reply"]
