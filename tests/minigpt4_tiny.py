"""A tiny MiniGPT-4-style model for fast tests: the packaged MobileNetV2 (small, and the grid its
Q-Former reads has a fixed shape) and SmolLM2's tokenizer and chat format around a 2-layer Q-Former
and a small random decoder."""

import torch

from vislang.checkpoints.gguf import smollm2_path
from vislang.checkpoints.torchvision import load_mobilenet_v2
from vislang.config import TextConfig
from vislang.models.minigpt4 import MiniGPT4, MiniGPT4Config
from vislang.processing.gguf_tokenizer import load_gguf_tokenizer
from vislang.text import Decoder

WIDTH = 64


def tiny_minigpt4(seed: int = 0) -> MiniGPT4:
    torch.manual_seed(seed)
    text = TextConfig(
        vocab_size=49152,
        hidden_size=WIDTH,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        eos_token_id=2,
    )
    cfg = MiniGPT4Config(
        image_size=64,  # a 4x4 grid of cells
        text_dim=WIDTH,
        num_query_tokens=4,
        qformer_hidden=32,
        qformer_layers=2,
        qformer_heads=4,
        qformer_mlp=64,
        cross_attention_frequency=2,
    )
    decoder = Decoder(text)
    model = MiniGPT4(cfg, load_mobilenet_v2(), decoder, load_gguf_tokenizer(smollm2_path()))
    with torch.no_grad():  # larger than a trained init, so greedy decoding does not settle on one token
        for name, p in model.named_parameters():
            if p.dim() >= 2 and not name.startswith("vision."):
                p.normal_(0.0, 0.5 / p.shape[-1] ** 0.5 if p.shape[-1] > 1 else 0.5)
    return model.eval()
