"""The model families vislang implements, by their config.json model_type."""

from ..config import ClipConfig, IdeficsConfig, LlavaConfig, Qwen2VLConfig, SiglipConfig
from ..config_blip2 import Blip2Config, InstructBlipConfig
from .blip2 import Blip2, InstructBlip
from .chat import Reply
from .clip import Clip
from .flamingo import Flamingo
from .idefics import Idefics
from .llava import Llava
from .llava_next import LlavaNext
from .qwen2vl import Qwen2VL
from .siglip import Siglip

# model_type -> (config class, model class)
MODEL_TYPES = {
    "llava": (LlavaConfig, Llava),
    "llava_next": (LlavaConfig, LlavaNext),
    "clip": (ClipConfig, Clip),
    "siglip": (SiglipConfig, Siglip),
    "qwen2_vl": (Qwen2VLConfig, Qwen2VL),
    "qwen2_5_vl": (Qwen2VLConfig, Qwen2VL),
    "idefics": (IdeficsConfig, Idefics),
    "blip-2": (Blip2Config, Blip2),
    "instructblip": (InstructBlipConfig, InstructBlip),
}

__all__ = [
    "MODEL_TYPES",
    "Blip2",
    "Clip",
    "Flamingo",
    "Idefics",
    "InstructBlip",
    "Llava",
    "LlavaNext",
    "Qwen2VL",
    "Reply",
    "Siglip",
]
