"""Tiny random Hugging Face configs and a tokenizer for parity tests, built in the test process
(nothing downloaded)."""

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

VISION = dict(
    model_type="clip_vision_model",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=28,
    patch_size=7,
    projection_dim=24,
    hidden_act="quick_gelu",
)

TEXT = {
    "llama_blocks": dict(  # widths that are multiples of 64: the q4 / q8 block formats take them
        model_type="llama",
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=160,
        max_position_embeddings=256,
        rope_theta=10000.0,
    ),
    "llama_gqa": dict(
        model_type="llama",
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        vocab_size=160,
        max_position_embeddings=256,
        rope_theta=10000.0,
    ),
    "llama_linear_rope": dict(
        model_type="llama",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=160,
        rope_scaling={"rope_type": "linear", "factor": 2.0},
        attention_bias=True,
        mlp_bias=True,
    ),
    "qwen2": dict(
        model_type="qwen2",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=160,
        rope_theta=1000000.0,
    ),
    "smollm2_tied": dict(
        model_type="llama",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        vocab_size=160,
        tie_word_embeddings=True,
        rope_theta=100000.0,
    ),
    "mistral_window": dict(
        model_type="mistral",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=160,
        sliding_window=7,
        head_dim=16,
    ),
}

IMAGE_TOKEN = 5
PAD = 0
EOS_NEVER = None


WORDS = ("USER ASSISTANT : what is in the picture ? a red circle blue square describe it . , hello").split(
    " "
)
TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>\n{% else %}{{ p['text'] }}{% endif %}"
    "{% endfor %}{% endif %} {% else %}ASSISTANT: {{ m['content'] if m['content'] is string "
    "else m['content'][0]['text'] }}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def tokenizer_dir(path):
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "\n": 4, "<image>": IMAGE_TOKEN}
    for w in WORDS:
        vocab.setdefault(w.lower(), len(vocab))
        vocab.setdefault(w, len(vocab))
    for i in range(len(vocab), 160):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )
    fast.save_pretrained(path)
    return fast


def llava_folder(path, text="llama_gqa"):
    """A tiny random LLaVA-1.5 checkpoint folder with tokenizer, image processor and chat template;
    returns (transformers model, processor)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.llava.processing_llava import LlavaProcessor

    cfg = LlavaConfig(text_config=TEXT[text], vision_config=VISION, image_token_index=IMAGE_TOKEN)
    hf = LlavaForConditionalGeneration(cfg).eval()
    hf.save_pretrained(path)
    fast = tokenizer_dir(path)
    images = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    images.save_pretrained(path)
    (path / "chat_template.jinja").write_text(TEMPLATE)
    processor = LlavaProcessor(
        image_processor=images,
        tokenizer=fast,
        patch_size=VISION["patch_size"],
        vision_feature_select_strategy="default",
        chat_template=TEMPLATE,
        num_additional_image_tokens=1,
    )
    return hf, processor


def tiny_decoder(tie=True):
    """A 2-layer Llama-style vislang decoder with seeded random weights."""

    from vislang.config import TextConfig
    from vislang.text.decoder import Decoder

    cfg = TextConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    return Decoder(cfg).eval()


CLIP_TEXT = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    vocab_size=160,
    max_position_embeddings=20,
    eos_token_id=2,
    bos_token_id=1,
    pad_token_id=0,
)


def clip_folder(path, seed=0):
    """A tiny random CLIP checkpoint with tokenizer and image processor: everything `embed` reads.
    Returns (transformers model, tokenizer, image processor) for referee computations."""
    torch.manual_seed(seed)
    hf = CLIPModel(CLIPConfig(text_config=CLIP_TEXT, vision_config=VISION, projection_dim=16)).eval()
    hf.save_pretrained(path)
    tokenizer = tokenizer_dir(path)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor.save_pretrained(path)
    return hf, tokenizer, processor


def inference_layout(lm) -> bool:
    """Whether `fuse=True` prepared this language model for serving: the native one-token step on
    its plain fused rows where the kernels build and the model fits, else oneDNN-layout weights."""
    if getattr(lm, "fast_decode", None) is not None:
        return True
    return any(type(m).__name__ == "PackedLinear" for m in lm.modules())
