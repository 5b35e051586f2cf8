"""A tiny random SigLIP checkpoint folder and a SigLIP-like tokenizer (appends </s>, pads with </s>),
built in the test process."""

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipModel
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from tiny import WORDS

CONTEXT = 16  # text max_position_embeddings: the padded length
IMAGE = 28
EOS = 1


def siglip_config(**vision) -> SiglipConfig:
    text = dict(
        vocab_size=160,
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CONTEXT,
        projection_size=32,  # the text head maps 48 -> 32, the vision width
        pad_token_id=EOS,
        bos_token_id=None,
        eos_token_id=EOS,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE,
        patch_size=7,
        **vision,
    )
    return SiglipConfig(text_config=text, vision_config=vision)


def siglip_model(seed: int = 0) -> SiglipModel:
    """Random weights with every bias, norm and the logit scale/bias moved off their init values,
    so a weight that is mapped wrong or left out shows in the outputs."""
    torch.manual_seed(seed)
    hf = SiglipModel(siglip_config()).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        hf.logit_scale.fill_(1.3)
        hf.logit_bias.fill_(-2.1)
    return hf


def siglip_tokenizer(path) -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "</s>": EOS, "<unk>": 2}
    for w in WORDS:
        vocab.setdefault(w.lower(), len(vocab))
    for i in range(len(vocab), 160):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="</s>", pad_token="</s>", unk_token="<unk>", model_max_length=CONTEXT
    )
    fast.save_pretrained(path)
    return fast


def siglip_folder(path, tokenizer: bool = True, image_processor: bool = True):
    """Save a tiny SigLIP (with tokenizer and image processor unless told not to); returns
    (transformers model, tokenizer or None, image processor)."""
    hf = siglip_model()
    hf.save_pretrained(path)
    images = SiglipImageProcessorPil(size={"height": IMAGE, "width": IMAGE})
    if image_processor:
        images.save_pretrained(path)
    return hf, siglip_tokenizer(path) if tokenizer else None, images
