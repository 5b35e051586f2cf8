"""Reduced-precision weights: int8 and bf16 layers against their fp32 originals, the repetition
penalty against transformers' logits processor, and the bytes a decode step reads."""

import pytest
import torch
from torch import nn
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from tiny import tiny_decoder
from vislang.generation.quantize import Bf16Linear, Int8Linear, quantize_decoder, weight_bytes_per_token
from vislang.generation.sampling import penalize_repetition
from vislang.nn import Linear


@pytest.mark.parametrize("make,bound", [(Int8Linear, 0.02), (Bf16Linear, 0.02)])
def test_reduced_linear_is_close_to_fp32(make, bound):
    torch.manual_seed(0)
    fp32 = nn.Linear(96, 40, bias=True)
    x = torch.randn(3, 5, 96)
    with torch.no_grad():
        ref, got = fp32(x), make(fp32)(x)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    rel = float((got - ref).abs().max() / ref.abs().max())
    assert 0 < rel <= bound


def test_int8_rows_use_their_own_scale():
    w = torch.tensor([[1.0, -0.5], [100.0, 50.0]])
    q = Int8Linear(_linear(w))
    assert q.weight.tolist() == [[127, -64], [127, 64]]
    assert torch.allclose(q.scale.float(), torch.tensor([1 / 127, 100 / 127]), rtol=1e-2)


def _linear(w):
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    return lin


@pytest.mark.parametrize("fuse", [False, True])  # fused: oneDNN-layout bf16 weights too
@pytest.mark.parametrize("fmt", ["int8", "bf16", "int8-full"])
def test_quantized_decoder_keeps_its_predictions(fmt, fuse):
    dec = tiny_decoder()
    ids = torch.randint(0, 300, (2, 12))
    with torch.inference_mode():
        ref = dec(input_ids=ids)
        quantize_decoder(dec, fmt, fuse=fuse, prefill_fp32=False)
        got = dec(input_ids=ids)
    plain = [m for m in dec.modules() if type(m) in (nn.Linear, Linear)]
    assert plain == ([] if fmt == "int8-full" else [dec.lm_head])  # the head stays fp32 unless "-full"
    assert (dec.lm_head.weight is dec.embed_tokens.weight) == (fmt != "int8-full")
    assert dec.embed_tokens.weight.dtype == torch.float32
    assert float((got - ref).abs().max()) <= 0.05 * float(ref.abs().max())
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9


def test_weight_bytes_per_token():
    dec = tiny_decoder(tie=True)
    every = sum(p.numel() * 4 for p in dec.parameters()) + sum(
        b.numel() * b.element_size() for b in dec.buffers()
    )
    assert weight_bytes_per_token(dec) == every  # tied: lm_head reads the whole table
    quantize_decoder(dec, "int8-full")
    linear = sum(m.weight.numel() + 2 * m.scale.numel() for m in dec.modules() if isinstance(m, Int8Linear))
    norms = sum(p.numel() * 4 for n, p in dec.named_parameters() if "norm" in n)
    inv_freq = sum(b.numel() * b.element_size() for n, b in dec.named_buffers() if "rotary" in n)
    assert weight_bytes_per_token(dec) == linear + norms + inv_freq + 64 * 4  # one embedding row
    kept_head = tiny_decoder(tie=True)
    quantize_decoder(kept_head, "int8")  # the tied fp32 head: the whole table is read per token
    body = sum(
        m.weight.numel() + 2 * m.scale.numel() for m in kept_head.modules() if isinstance(m, Int8Linear)
    )
    assert weight_bytes_per_token(kept_head) == body + norms + inv_freq + 300 * 64 * 4


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="int8"):
        quantize_decoder(tiny_decoder(), "fp8")


def test_repetition_penalty_matches_transformers():
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    seen = torch.randint(0, 50, (3, 9))
    ref = RepetitionPenaltyLogitsProcessor(1.3)(seen, logits.clone())
    assert torch.equal(penalize_repetition(logits, seen, 1.3), ref)
    assert torch.equal(penalize_repetition(logits, seen, 1.0), logits)


def test_fused_projections_compute_the_same_logits():
    from vislang.train.lora import add_lora

    dec = tiny_decoder()
    add_lora(dec, ["q_proj", "v_proj", "up_proj"], rank=4, alpha=8.0)
    with torch.no_grad():
        for name, p in dec.named_parameters():
            if "lora_B" in name:
                p.normal_()  # adapters that do something, so folding them in is tested too
    ids = torch.randint(0, 300, (2, 10))
    with torch.inference_mode():
        ref = dec(input_ids=ids)
        quantize_decoder(dec, "fp32", fuse=True)
        got = dec(input_ids=ids)
    layer = dec.layers[0]
    assert layer.self_attn.qkv_proj.out_features == 64 + 2 * 32
    assert layer.mlp.gate_up_proj.out_features == 2 * 128
    assert not hasattr(layer.self_attn, "q_proj")
    assert float((got - ref).abs().max()) <= 1e-4


def test_fused_int8_equals_unfused_int8():
    a, b = tiny_decoder(), tiny_decoder()
    ids = torch.randint(0, 300, (1, 8))
    quantize_decoder(a, "int8-full")
    quantize_decoder(b, "int8-full", fuse=True)
    with torch.inference_mode():
        assert float((a(input_ids=ids) - b(input_ids=ids)).abs().max()) <= 1e-4


@pytest.mark.parametrize("fmt", ["int8", "bf16", "int8-full"])
def test_prefill_runs_on_fp32_weights_and_decode_on_reduced_ones(fmt):
    from vislang.generation.quantize import PREFILL_ROWS

    dec = tiny_decoder()
    prompt = torch.randint(0, 300, (1, PREFILL_ROWS + 4))
    step = torch.randint(0, 300, (1, 1))
    with torch.inference_mode():
        ref_prompt, ref_step = dec(input_ids=prompt), dec(input_ids=step)
        quantize_decoder(dec, fmt)
        assert torch.equal(dec(input_ids=prompt), ref_prompt)  # the prefill: fp32, bit for bit
        got = dec(input_ids=step)
    assert not torch.equal(got, ref_step)  # one row: the reduced weights
    assert float((got - ref_step).abs().max()) <= 0.05 * float(ref_step.abs().max())


def test_every_prefill_runs_the_fp32_weights_however_short():
    """A call under prefill() takes the fp32 path even with few rows (the tail after a cached
    prefix); outside it, a few rows are a decode step on the reduced weights."""
    from vislang.generation.quantize import prefill

    torch.manual_seed(0)
    fp32 = nn.Linear(64, 32)
    layer = Int8Linear(fp32, prefill_fp32=True)
    x = torch.randn(1, 3, 64)
    with torch.no_grad():
        exact = nn.functional.linear(x, fp32.weight, fp32.bias)
        with prefill():
            assert torch.allclose(layer(x), exact, atol=1e-5)
        assert not torch.allclose(layer(x), exact, atol=1e-5)


def test_a_repeated_image_answers_as_the_first_time():
    """The default model on int8 weights: the second ask reuses the prefix (its few-token tail is a
    prefill too) and answers exactly as the first."""
    from pathlib import Path

    import vislang
    from vislang.generation.engine import Engine

    model = vislang.load(weights="int8", fuse=True)
    scene = (Path(__file__).resolve().parent.parent / "src/vislang/assets/demo/scene.png").read_bytes()
    msgs = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Name a color."}, {"type": "image", "image": scene}],
        }
    ]
    alone = model.chat(msgs, max_new_tokens=8).token_ids
    with Engine(model, max_batch=2) as engine:
        first, again = engine.generate(msgs, max_new_tokens=8), engine.generate(msgs, max_new_tokens=8)
    assert again.cached["prefix_tokens"] > 0
    assert first.token_ids == again.token_ids == alone
