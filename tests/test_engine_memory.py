"""KV memory that follows the tokens in use: the slot cache starts at one block, grows while a long
sequence needs it (copying what is filled), drops back when idle, and stays under a budget; answers
are the same as with no growth at all."""

import time

import pytest
import torch

import vislang
from qwen_tiny import qwen_folder
from vislang.errors import PromptTooLongError
from vislang.generation.engine import Engine
from vislang.generation.slots import SlotCache


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("memory_qwen")
    qwen_folder(path)  # a 1024-token context
    return vislang.load(path)


def conversation(words):
    g = torch.Generator().manual_seed(words)
    text = " ".join(f"w{int(i)}" for i in torch.randint(30, 150, (words,), generator=g))
    return [{"role": "user", "content": text}]


def test_the_cache_grows_with_the_longest_sequence_and_answers_do_not_change(model):
    short, long = conversation(10), conversation(400)  # the long one passes two blocks mid-answer
    alone = [model.chat(m, max_new_tokens=150, min_new_tokens=150).token_ids for m in (short, long)]
    with Engine(model, max_batch=2) as engine:
        assert engine.max_len == 1024 and engine.cache.capacity == SlotCache.BLOCK
        handles = [engine.submit(m, max_new_tokens=150, min_new_tokens=150) for m in (short, long)]
        together = [h.result(120).token_ids for h in handles]
        grown = engine.cache.capacity
        for _ in range(50):  # idle again: the memory goes back
            if engine.cache.capacity == SlotCache.BLOCK:
                break
            time.sleep(0.05)
        assert engine.cache.capacity == SlotCache.BLOCK
    assert together == alone
    assert grown >= 512


def test_a_budget_bounds_the_longest_sequence(model):
    per_token = SlotCache.for_decoder(model.language_model, 2, 1024).bytes_for(1)
    budget = per_token * 512  # both slots at most 512 tokens
    with Engine(model, max_batch=2, kv_budget_bytes=budget) as engine:
        with pytest.raises(PromptTooLongError, match="budget"):
            engine.submit(conversation(300), max_new_tokens=300)  # 600+ tokens can never fit
        alone = [model.chat(m, max_new_tokens=20).token_ids for m in (conversation(150), conversation(5))]
        handles = [engine.submit(m, max_new_tokens=20) for m in (conversation(150), conversation(5))]
        assert [h.result(120).token_ids for h in handles] == alone
        long = engine.submit(conversation(250), max_new_tokens=200, min_new_tokens=200)  # up to ~480
        assert len(long.result(120).token_ids) == 200
        assert engine.cache.capacity <= 512 and engine.cache.nbytes() <= budget


def test_max_new_tokens_omitted_runs_to_the_budgets_end(model):
    """Omitted max_new_tokens means up to the longest sequence the budget allows, not the context
    (which the budget would refuse)."""
    per_token = SlotCache.for_decoder(model.language_model, 2, 1024).bytes_for(1)
    with Engine(model, max_batch=2, kv_budget_bytes=per_token * 512) as engine:
        assert engine.token_limit == 512 < engine.max_len
        handle = engine.submit(conversation(20), max_new_tokens=None)
        done = handle.result(120)
        assert len(done.token_ids) + done.usage["prompt_tokens"] <= 512
        assert handle.params.max_new_tokens == 512 - done.usage["prompt_tokens"]
