from .clip_text import ClipTextTransformer
from .decoder import Decoder, DecoderLayer

__all__ = ["ClipTextTransformer", "Decoder", "DecoderLayer"]
