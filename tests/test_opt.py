"""vislang's OPT decoder against transformers' OPTForCausalLM on its own: pre-norm (OPT-1.3b and up,
BLIP-2's), post-norm with projected embeddings (OPT-350m); left padding, KV cache, greedy tokens."""

import pytest
import torch
from transformers import OPTConfig as HFOPTConfig
from transformers import OPTForCausalLM

from blip2_tiny import TEXT, randomize
from parity import max_diff_real
from vislang.checkpoints.keymaps import hf_to_vislang
from vislang.config_blip2 import OPTConfig
from vislang.generation import SamplingParams, generate
from vislang.text.opt import OPTDecoder

SHAPES = {
    "pre_norm": dict(TEXT["opt"]),
    "post_norm_projected": dict(TEXT["opt_projected"], do_layer_norm_before=False),
    "untied_no_bias": dict(TEXT["opt"], tie_word_embeddings=False, enable_bias=False),
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pair(shape):
    hf = OPTForCausalLM(HFOPTConfig(**SHAPES[shape]))
    randomize(hf, seed=3)
    hf.eval()
    cfg = OPTConfig.from_hf(hf.config.to_dict())
    ours = OPTDecoder(cfg).eval()
    prefix = "language_model."
    state = {hf_to_vislang("blip-2:opt", prefix + k)[len(prefix) :]: v for k, v in hf.state_dict().items()}
    if ours.tie:
        state.pop("lm_head.weight", None)
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    ours.tie_weights()
    return hf, ours


def left_padded():
    ids = torch.randint(3, 160, (2, 11))
    mask = torch.ones_like(ids)
    ids[1, :4], mask[1, :4] = 1, 0
    return ids, mask


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_logits_cache_and_greedy_match(shape):
    hf, ours = pair(shape)
    ids, mask = left_padded()
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask).logits
        full = ours(ids, attention_mask=mask)
    assert max_diff_real(theirs, full, mask) <= 1e-4
    # prompt then one token at a time through the KV cache: the same logits
    with torch.no_grad():
        cache = ours.new_cache(2, ids.shape[1])
        first = ours(ids[:, :7], attention_mask=mask[:, :7], cache=cache)
        steps = [ours(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache) for t in range(7, 11)]
    assert max_diff_real(full, torch.cat([first, *steps], 1), mask) <= 1e-5

    class Wrapped(torch.nn.Module):  # generate's model interface: .logits and new_cache
        def forward(self, **kw):
            kw.pop("last_only", None)
            return type("Out", (), {"logits": ours(**kw)})()

        def new_cache(self, batch, max_len):
            return ours.new_cache(batch, max_len)

    a = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False)[:, ids.shape[1] :]
    b = generate(Wrapped(), ids, mask, SamplingParams(12), hf.generation_config.eos_token_id, 1)
    assert torch.equal(a, b)
