"""Requests with the same prompt and images (the n choices of one request) share one prefill: the
first computes it, the others copy its KV (and M-RoPE offset) and sample their own answers."""

import vislang
from qwen_tiny import qwen_folder, random_image
from vislang.generation.engine import Engine


def test_identical_requests_prefill_once(tmp_path):
    qwen_folder(tmp_path)
    model = vislang.load(tmp_path)
    msgs = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": random_image(90, 60)},
                {"type": "text", "text": "describe it"},
            ],
        }
    ]
    alone = model.chat(msgs, max_new_tokens=6, min_new_tokens=6).token_ids
    calls = []
    forward = model.forward

    def counted(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape)
        return forward(*args, **kwargs)

    model.forward = counted
    with Engine(model, max_batch=5) as engine:
        admit = engine._admit  # admit only once all five are queued, as n choices arrive together
        engine._admit = lambda: admit() if engine.waiting.qsize() >= 5 or any(engine.slots) else None
        greedy = [engine.submit(msgs, max_new_tokens=6, min_new_tokens=6) for _ in range(3)]
        sampled = [
            engine.submit(msgs, max_new_tokens=6, do_sample=True, temperature=1.5, seed=s) for s in (1, 2)
        ]
        done = [h.result(60) for h in greedy + sampled]
    prefills = [shape for shape in calls if shape[1] > 1]
    assert [d.token_ids for d in done[:3]] == [alone] * 3
    assert len(prefills) == 1  # one prefill for the five
    assert sum(d.cached["prefix_tokens"] == d.usage["prompt_tokens"] for d in done) == 4  # the followers
    assert all(d.token_ids for d in done[3:])  # sampled followers draw their own tokens
