"""A tiny vislang Flamingo for fast tests: SmolLM2's tokenizer and chat format around a small random
decoder and a one-convolution vision tower, with gates opened so that media change the answer."""

import torch
from torch import nn

from vislang.checkpoints.gguf import smollm2_path
from vislang.config import TextConfig
from vislang.models.flamingo import Flamingo, FlamingoConfig
from vislang.processing.gguf_tokenizer import load_gguf_tokenizer
from vislang.text import Decoder

WIDTH = 64


class TinyVision(nn.Module):
    """MobileNetV2's interface (`features`: pixels -> a grid) at a 4x4 grid of 16 channels."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 8, stride=8), nn.GELU())


def tiny_flamingo(seed: int = 0, open_gates: bool = True) -> Flamingo:
    torch.manual_seed(seed)
    text = TextConfig(
        vocab_size=49152,
        hidden_size=WIDTH,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        eos_token_id=2,
    )
    cfg = FlamingoConfig(
        image_size=32,
        vision_dim=16,
        text_dim=WIDTH,
        n_latents=4,
        resampler_depth=1,
        resampler_heads=2,
        resampler_head_dim=16,
        resampler_mlp=128,
        max_frames=16,
        cross_every=2,
        cross_heads=4,
        cross_mlp=128,
    )
    model = Flamingo(cfg, TinyVision(), Decoder(text).eval(), load_gguf_tokenizer(smollm2_path()))
    with torch.no_grad():  # larger than a trained init, so greedy decoding does not settle on one token
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.5 / p.shape[-1] ** 0.5 if p.shape[-1] > 1 else 0.5)
    if open_gates:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "alpha" in name:
                    p.fill_(1.0)
    return model.eval()
