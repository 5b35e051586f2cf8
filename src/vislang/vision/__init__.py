from .mobilenet import MobileNetV2
from .qwen2vl import QwenVisionTransformer
from .vit import VisionTransformer

__all__ = ["MobileNetV2", "QwenVisionTransformer", "VisionTransformer"]
