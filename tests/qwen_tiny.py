"""Tiny random Qwen2-VL / Qwen2.5-VL checkpoints, a tokenizer with Qwen's special tokens and a
Qwen-style chat template, all built in the test process (nothing downloaded)."""

import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from vislang.processing.chat_template import QWEN2VL_FALLBACK_CHAT_TEMPLATE as TEMPLATE

IMAGE, VIDEO, START, END = 5, 6, 7, 8
SPECIAL = {
    "<pad>": 0,
    "<|im_start|>": 1,
    "<|im_end|>": 2,
    "<unk>": 3,
    "\n": 4,
    "<|image_pad|>": IMAGE,
    "<|video_pad|>": VIDEO,
    "<|vision_start|>": START,
    "<|vision_end|>": END,
}
WORDS = "user assistant system what is in the picture ? a red circle blue square describe it . , hello video"
WORDS = WORDS.split()


def text_config(tie=False, heads=4, kv=2, head_dim=8, sections=(2, 1, 1), layers=2):
    return dict(
        hidden_size=heads * head_dim,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=160,
        max_position_embeddings=1024,
        tie_word_embeddings=tie,
        rope_parameters={"rope_type": "default", "mrope_section": list(sections), "rope_theta": 10000.0},
        eos_token_id=2,
        pad_token_id=0,
    )


def vision_config(v25=False, width=32, heads=4, depth=2, window=56, full=(1,), out=32):
    """out: the language model's width, which the merger projects to."""
    if v25:
        return dict(
            depth=depth,
            hidden_size=width,
            out_hidden_size=out,
            intermediate_size=48,
            num_heads=heads,
            window_size=window,
            fullatt_block_indexes=list(full),
            tokens_per_second=2,
        )
    return dict(depth=depth, embed_dim=width, hidden_size=out, num_heads=heads, mlp_ratio=2)


def build_hf(v25=False, tie=False, text=None, vision=None, seed=0):
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )

    config_cls, model_cls = (
        (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration)
        if v25
        else (Qwen2VLConfig, Qwen2VLForConditionalGeneration)
    )
    cfg = config_cls(
        text_config=text or text_config(tie),
        vision_config=vision or vision_config(v25),
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        vision_start_token_id=START,
        vision_end_token_id=END,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    with torch.no_grad():  # random layer norms too, so a mix-up of norm weights shows
        for name, p in model.named_parameters():
            if "norm" in name or "ln_q" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def tokenizer_dir(path):
    vocab = dict(SPECIAL)
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    for i in range(len(vocab), 160):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL if t != "\n"])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.save_pretrained(path)
    return fast


def qwen_folder(path, v25=False, tie=False, min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64, **kw):
    """A complete checkpoint folder: weights, tokenizer, image processor settings, chat template.
    Returns (transformers model, transformers PIL image processor)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    hf = build_hf(v25, tie, **kw)
    hf.save_pretrained(path)
    tokenizer_dir(path)
    images = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
    images.save_pretrained(path)
    (path / "chat_template.jinja").write_text(TEMPLATE)
    return hf, images


def random_image(width, height, seed=0):
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8).numpy()
    return Image.fromarray(pixels)
