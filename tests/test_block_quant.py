"""Block-quantized weights (q4 / q8, llama.cpp's Q4_0 / Q4_1 / Q8_0) and the native decode step.

Referees: gguf-py's own quantizer and dequantizer for the block formats; a PyTorch reference
that quantizes activations to 8 bits per block of 32 for the integer kernels; the PyTorch
layer-by-layer path for the native step (greedy tokens identical, logits to a tolerance that
allows an activation rounding to land on the other side of a half)."""

import copy

import gguf
import numpy as np
import pytest
import torch

from vislang import kernels
from vislang.generation import SamplingParams, generate
from vislang.generation.blocks import (
    Q4,
    Q8,
    BlockLinear,
    dequantize,
    from_gguf,
    pack_nibbles,
    quantize_q4,
    quantize_q8,
    unpack_nibbles,
)
from vislang.generation.engine import Engine
from vislang.generation.quantize import prefill, quantize_decoder
from vislang.text.decoder import Decoder

needs_native = pytest.mark.skipif(kernels.native() is None, reason=f"native kernels: {kernels.build_error()}")


@pytest.fixture(autouse=True)
def _threads():
    torch.manual_seed(0)


def test_native_kernels_build_where_a_compiler_is():
    import os
    import shutil

    if os.environ.get("VISLANG_NATIVE") == "0":  # turned off: the PyTorch path, said why
        assert kernels.native() is None and "VISLANG_NATIVE" in kernels.build_error()
    elif shutil.which("c++"):  # CI has one: a build failure must fail here, not skip quietly below
        assert kernels.native() is not None, kernels.build_error()


def test_pack_unpack_and_quantize_round_trip():
    q = torch.randint(0, 16, (5, 128), dtype=torch.uint8)
    assert torch.equal(unpack_nibbles(pack_nibbles(q)), q)
    w = torch.randn(6, 192)
    qs, d, m = quantize_q4(w)
    err = (dequantize(Q4, qs, d, m) - w).abs().reshape(6, 6, 32)
    assert (err <= d.float()[..., None] * 0.5 + 1e-3).all()  # half a step (fp16 scale rounding aside)
    qs8, d8, m8 = quantize_q8(w)
    err8 = (dequantize(Q8, qs8, d8, m8) - w).abs().reshape(6, 6, 32)
    assert (err8 <= d8.float()[..., None] * 0.5 + 1e-4).all()


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0"])
def test_gguf_blocks_equal_gguf_dequantize(kind):
    w = np.random.default_rng(0).standard_normal((7, 256)).astype(np.float32)
    qtype = getattr(gguf.GGMLQuantizationType, kind)
    raw = gguf.quants.quantize(w, qtype)
    expected = torch.from_numpy(gguf.quants.dequantize(raw, qtype).reshape(7, 256).astype(np.float32))
    k, qs, d, m = from_gguf(kind, raw)
    assert torch.equal(dequantize(k, qs, d, m), expected)


def reference_qmatmul(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """What the integer kernels compute: x rounded to int8 per block of 32 (scale max|x| / 127)."""
    blocks = x.reshape(x.shape[0], -1, 32)
    d = blocks.abs().amax(-1, keepdim=True) / 127
    q = torch.where(d > 0, blocks / torch.where(d > 0, d, 1), 0).round()
    return (q * d).reshape(x.shape) @ w.T.double().float()


@needs_native
@pytest.mark.parametrize("fmt", ["q4", "q8"])
@pytest.mark.parametrize("rows", [1, 3, 9])
def test_native_matmul_equals_reference(fmt, rows):
    ext = kernels.native()
    layer = BlockLinear.quantize(torch.nn.Linear(320, 70, bias=True), fmt)
    x = torch.randn(rows, 320) * 3
    w = layer.weight_fp32()
    assert torch.equal(w, dequantize(layer.kind, layer.qs, layer.d, layer.m, use_native=False))
    got = ext.qmatmul(layer.kind, False, layer.qs, layer.d, layer.m, x)
    portable = ext.qmatmul_portable(layer.kind, False, layer.qs, layer.d, layer.m, x)  # CPUs without VNNI
    assert (portable - got).abs().max() < 1e-5 * got.abs().max()
    layer.interleave()  # rows four at a time (70 rows: 17 fours and 2 plain): the same numbers
    assert torch.equal(layer.weight_fp32(), w)
    assert torch.equal(dequantize(layer.kind, layer.qs, layer.d, layer.m, True, use_native=False), w)
    assert torch.equal(ext.qmatmul(layer.kind, True, layer.qs, layer.d, layer.m, x), got)
    want = reference_qmatmul(w, x)
    assert (got - want).abs().max() < 1e-4 * want.abs().max()
    # a decode call goes through the kernel (bias added); a prompt through fp32 on the expanded weights
    torch.testing.assert_close(layer(x[None]), (got + layer.bias)[None])
    with prefill():
        torch.testing.assert_close(layer(x), x @ w.T + layer.bias, atol=1e-5, rtol=1e-5)


def tiny_decoder(bias=False, layers=3):
    from vislang.config import TextConfig

    cfg = TextConfig(
        vocab_size=320,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        attention_bias=bias,
        tie_word_embeddings=True,
    )
    torch.manual_seed(1)
    return Decoder(cfg).eval()


def greedy(decoder, ids, mask, n=12):
    out = generate(
        decoder, ids, attention_mask=mask, params=SamplingParams(max_new_tokens=n), eos_token_id=[]
    )
    return out


class _LM(torch.nn.Module):  # generate() drives a module with new_cache and .logits
    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def new_cache(self, batch, max_len):
        return self.decoder.new_cache(batch, max_len)

    def forward(self, input_ids, attention_mask=None, cache=None, last_only=False, **_):
        class Out:
            logits = self.decoder(
                input_ids=input_ids, attention_mask=attention_mask, cache=cache, last_only=last_only
            )

        return Out


def _padded_batch():
    ids = torch.randint(3, 320, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, :4] = 0  # left padding, as generate pads a batch
    mask[2, :2] = 0
    return ids, mask


@needs_native
@pytest.mark.parametrize("fmt", ["q4", "q8"])
@pytest.mark.parametrize("bias", [False, True])
def test_native_step_equals_layer_by_layer(fmt, bias):
    model = quantize_decoder(tiny_decoder(bias), fmt, fuse=True)
    assert model.fast_decode is not None
    slow = copy.deepcopy(model)
    slow.fast_decode = None
    ids, mask = _padded_batch()
    with torch.inference_mode():
        fast_tokens = greedy(_LM(model), ids, mask)
        slow_tokens = greedy(_LM(slow), ids, mask)
        assert torch.equal(fast_tokens, slow_tokens)
        # one step's logits, after the same padded prefill
        caches = [model.new_cache(3, 16), slow.new_cache(3, 16)]
        logits = []
        for m, cache in zip((model, slow), caches):
            with prefill():
                m(input_ids=ids, attention_mask=mask, cache=cache)
            step_mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], dim=1)
            logits.append(m(input_ids=ids[:, -1:], attention_mask=step_mask, cache=cache))
            assert cache.length == 10
        # 1e-5 apart, unless a float-order difference (norm, attention) moved an activation across
        # a rounding half: one 8-bit step then shifts that row by ~0.1% of the logits' range
        scale = float(logits[1].abs().max())
        torch.testing.assert_close(logits[0], logits[1], atol=2e-3 * scale, rtol=0)
        assert float((logits[0] - logits[1]).abs().median()) < 1e-4 * scale
        keys = [c.keys[2][:, :, :10] for c in caches]  # the cache the native step wrote
        torch.testing.assert_close(keys[0], keys[1], atol=1e-2 * float(keys[1].abs().max()), rtol=0)
        assert float((keys[0] - keys[1]).abs().median()) < 1e-6


@needs_native
def test_engine_batched_equals_one_by_one_on_native_step(tmp_path):
    """A LLaVA model on q4 blocks: 7 requests of 0-2 images through 3 slots (rows of different
    lengths under one padding mask in each native step) give the one-by-one tokens of the
    PyTorch layer-by-layer path."""
    import vislang
    from test_engine import requests
    from tiny import llava_folder

    llava_folder(tmp_path, text="llama_blocks")
    model = vislang.load(tmp_path, weights="q4", fuse=True)
    assert model.language_model.fast_decode is not None
    slow = vislang.load(tmp_path, weights="q4", fuse=True)
    slow.language_model.fast_decode = None
    alone = [slow.chat(msgs, **kw).token_ids for msgs, kw in requests()]
    assert [model.chat(msgs, **kw).token_ids for msgs, kw in requests()] == alone
    with Engine(model, max_batch=3, max_len=160, max_images=3) as engine:
        handles = [engine.submit(msgs, **kw) for msgs, kw in requests()]
        assert [h.result(60).token_ids for h in handles] == alone


def test_without_native_kernels_blocks_still_run(monkeypatch):
    model = quantize_decoder(tiny_decoder(), "q4", fuse=True)
    ids, mask = _padded_batch()
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask)
        monkeypatch.setitem(kernels._STATE, "module", None)
        got = model(input_ids=ids, attention_mask=mask)  # PyTorch expansion of the blocks
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


@needs_native
@pytest.mark.parametrize("fmt", ["q4", "q8"])
def test_a_batch_gives_each_row_the_bits_it_gets_alone(fmt):
    """Rows decoded together (weights unpacked once for up to four sequences) equal each row alone."""
    ext = kernels.native()
    layer = BlockLinear.quantize(torch.nn.Linear(192, 44), fmt)
    layer.interleave()
    x = torch.randn(7, 192)
    together = ext.qmatmul(layer.kind, True, layer.qs, layer.d, layer.m, x)
    alone = torch.cat(
        [ext.qmatmul(layer.kind, True, layer.qs, layer.d, layer.m, x[i : i + 1]) for i in range(7)]
    )
    assert torch.equal(together, alone)


def test_gguf_blocks_run_as_stored_and_prompts_equal_fp32():
    """The packaged SmolLM2 Q4_1 file: its blocks kept (Q4 layers, the Q8_0 table as the head),
    the same blocks as re-quantizing its fp32 expansion, and a prompt's logits fp32's to rounding."""
    from vislang.checkpoints.gguf import load_gguf_decoder

    blocks = load_gguf_decoder(weights="q4")
    fp32 = load_gguf_decoder()
    layer = blocks.layers[3].mlp.gate_proj
    assert isinstance(layer, BlockLinear) and layer.kind == Q4
    assert isinstance(blocks.lm_head, BlockLinear) and blocks.lm_head.kind == Q8
    again = BlockLinear.quantize(fp32.layers[3].mlp.gate_proj, "q4")
    assert torch.equal(again.qs, layer.qs) and torch.equal(again.d, layer.d) and torch.equal(again.m, layer.m)
    quantize_decoder(blocks, "q4", fuse=True)
    ids = torch.randint(0, 49152, (1, 20))
    with torch.inference_mode(), prefill():
        want = fp32(input_ids=ids, last_only=True)
        got = blocks(input_ids=ids, last_only=True)
    torch.testing.assert_close(got, want, atol=2e-4, rtol=0)


def test_without_native_kernels_fp32_serving_keeps_onednn_layout(monkeypatch):
    from tiny import inference_layout

    monkeypatch.setitem(kernels._STATE, "module", None)
    dec = tiny_decoder()
    ids = torch.randint(0, 320, (2, 7))
    with torch.inference_mode():
        want = dec(input_ids=ids)
        quantize_decoder(dec, "fp32", fuse=True)
        assert dec.fast_decode is None and inference_layout(dec)
        torch.testing.assert_close(dec(input_ids=ids), want, atol=1e-4, rtol=0)
