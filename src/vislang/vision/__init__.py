from .mobilenet import MobileNetV2
from .vit import VisionTransformer

__all__ = ["MobileNetV2", "VisionTransformer"]
