from .clip_text import ClipTextTransformer
from .decoder import Decoder, DecoderLayer
from .siglip_text import SiglipTextTransformer

__all__ = ["ClipTextTransformer", "Decoder", "DecoderLayer", "SiglipTextTransformer"]
