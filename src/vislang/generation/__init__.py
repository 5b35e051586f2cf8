from .generate import generate
from .sampling import SamplingParams, next_token

__all__ = ["SamplingParams", "generate", "next_token"]
