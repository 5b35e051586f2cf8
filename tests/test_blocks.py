"""Shared blocks: masks, RoPE scaling, the decoder on its own, the KV cache."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from vislang.config import TextConfig
from vislang.nn import KVCache, build_mask, positions_from_mask
from vislang.text import Decoder


def test_mask_combines_causal_padding_and_window():
    pad = torch.tensor([[0, 1, 1, 1]])
    m = build_mask(pad, 4, 4, torch.float32, causal=True, window=2)[0, 0]
    allowed = (m == 0).int().tolist()
    assert allowed == [[0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    assert torch.isfinite(m).all()  # blocked entries are finite: no NaN from an all-blocked row


def test_mask_for_new_tokens_after_cache():
    m = build_mask(torch.ones(1, 5), 2, 5, torch.float32)[0, 0]
    assert (m == 0).int().tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


def test_positions_skip_left_padding():
    assert positions_from_mask(torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])).tolist() == [
        [0, 0, 0, 1, 2],
        [0, 1, 2, 3, 4],
    ]


def test_cache_refuses_overflow():
    cache = KVCache(1, 1, 1, 4, max_len=3)
    cache.update(0, torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 3, 4))
    cache.advance(3)
    with pytest.raises(ValueError, match="KV cache full"):
        cache.update(0, torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4))


def decoder_pair(**overrides):
    cfg = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=90,
        max_position_embeddings=512,
        **overrides,
    )
    hf = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    ours = Decoder(TextConfig.from_hf(hf.config.to_dict())).eval()
    state = {k.removeprefix("model."): v for k, v in hf.state_dict().items()}
    ours.load_state_dict(state)
    return hf, ours


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "default", "rope_theta": 500000.0},
        {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0},
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
            "rope_theta": 500000.0,
        },
    ],
)
def test_decoder_matches_llama_with_rope_scaling(rope):
    hf, ours = decoder_pair(rope_parameters=rope)
    ids = torch.randint(0, 90, (2, 300))  # long enough for the scaled frequencies to matter
    with torch.no_grad():
        assert float((hf(input_ids=ids).logits - ours(ids)).abs().max()) <= 1e-4


def test_unknown_rope_type_is_refused():
    with pytest.raises(ValueError, match="rope_type"):
        Decoder(
            TextConfig(
                hidden_size=32,
                num_attention_heads=4,
                num_hidden_layers=1,
                intermediate_size=8,
                vocab_size=10,
                rope_scaling={"rope_type": "yarn", "factor": 2.0},
            )
        )


def test_cached_decoder_equals_uncached():
    _, ours = decoder_pair()
    ids = torch.randint(0, 90, (2, 12))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    with torch.no_grad():
        full = ours(ids, attention_mask=mask)
        cache = ours.new_cache(2, 12)
        parts = [ours(ids[:, :7], attention_mask=mask[:, :7], cache=cache)]
        parts += [ours(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache) for t in range(7, 12)]
    diff = (full - torch.cat(parts, 1))[mask.bool()].abs().max()
    assert float(diff) <= 1e-5


def test_rotate_equals_apply_rope_bit_for_bit():
    from vislang.nn import RotaryEmbedding, apply_rope
    from vislang.nn.rope import rope_for_heads, rotate

    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 64)  # [B, T, H, D]
    cos, sin = RotaryEmbedding(64, 10000.0)(torch.tensor([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]]), torch.float32)
    ref = apply_rope(x.transpose(1, 2), cos, sin).transpose(1, 2)
    assert torch.equal(rotate(x, *rope_for_heads(cos, sin)), ref)


def test_rms_norm_fast_path_equals_the_written_out_formula():
    from vislang.nn import RMSNorm

    torch.manual_seed(0)
    norm, x = RMSNorm(576, eps=1e-5), 3 * torch.randn(2, 7, 576)
    torch.nn.init.normal_(norm.weight)
    ref = norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))
    assert torch.equal(norm(x), ref)
