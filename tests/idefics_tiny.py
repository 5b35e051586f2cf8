"""Tiny random IDEFICS checkpoints and an IdeficsProcessor for the parity tests (nothing downloaded)."""

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import IdeficsConfig, IdeficsForVisionText2Text, PreTrainedTokenizerFast
from transformers.models.idefics.image_processing_pil_idefics import IdeficsImageProcessorPil
from transformers.models.idefics.processing_idefics import IdeficsProcessor

VOCAB = 160  # regular tokens; <fake_token_around_image> is 160, <image> 161
FAKE_ID, IMAGE_ID = 160, 161
SIZE = 28
WORDS = "User Assistant : what is in the picture ? a red circle blue square describe it . , hello and".split()

VISION = dict(
    embed_dim=24,
    image_size=SIZE,
    patch_size=7,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
)
PERCEIVER = dict(
    use_resampler=True,
    resampler_n_latents=3,
    resampler_depth=2,
    resampler_n_heads=2,
    resampler_head_dim=8,
    qk_layer_norms_perceiver=True,
)


def tokenizer(path=None):
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<end_of_utterance>": 3, "\n": 4}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
        vocab.setdefault(w.lower(), len(vocab))
    for i in range(len(vocab), VOCAB):
        vocab[f"w{i}"] = i
    vocab["<fake_token_around_image>"], vocab["<image>"] = FAKE_ID, IMAGE_ID
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<unk>",
        unk_token="<unk>",
        padding_side="left",
        additional_special_tokens=["<fake_token_around_image>", "<image>", "<end_of_utterance>"],
    )
    if path is not None:
        fast.save_pretrained(path)
    return fast


def config(resampler=True, interval=1, alpha_type="float", layers=2, added=True, qk_norms=False):
    return IdeficsConfig(
        vocab_size=VOCAB if added else VOCAB + 2,
        additional_vocab_size=2 if added else 0,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        cross_layer_interval=interval,
        alpha_type=alpha_type,
        qk_layer_norms=qk_norms,
        use_resampler=resampler,
        vision_config=VISION,
        perceiver_config={**PERCEIVER, "use_resampler": resampler},
        pad_token_id=0,
    )


def idefics_folder(path, **kw):
    """A tiny IDEFICS folder with tokenizer and image processor; returns (transformers model, processor)."""
    hf = IdeficsForVisionText2Text(config(**kw)).eval()
    with torch.no_grad():  # random non-zero gates, so cross-attention changes the logits
        for layer in hf.model.gated_cross_attn_layers:
            layer.alpha_cross_attn.normal_(std=0.8)
            layer.alpha_dense.normal_(std=0.8)
    hf.save_pretrained(path)
    images = IdeficsImageProcessorPil(image_size=SIZE)
    images.save_pretrained(path)
    return hf, IdeficsProcessor(image_processor=images, tokenizer=tokenizer(path), image_size=SIZE)
