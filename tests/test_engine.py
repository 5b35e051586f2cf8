"""The continuous-batching engine on a tiny random LLaVA: every request decoded in a shared batch
must equal the same request decoded alone, token for token; streaming, stops, seeds, cancelling,
the image caches and bad input are checked against that same referee."""

import asyncio
import time

import numpy as np
import pytest
import torch
from PIL import Image

import vislang
from tiny import llava_folder
from vislang.errors import PromptTooLongError, VislangError
from vislang.generation.engine import Engine

WORDS = "what is in the picture ? a red circle blue square describe it hello".split()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("engine_llava")
    llava_folder(path)
    return vislang.load(path)


@pytest.fixture(scope="module")
def engine(model):
    with Engine(model, max_batch=3, max_len=160, max_images=3) as eng:
        yield eng


def picture(seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (30 + seed, 36, 3), dtype=np.uint8))


def conversation(i, images=1):
    rng = np.random.default_rng(100 + i)
    text = " ".join(rng.choice(WORDS, size=2 + 3 * (i % 4)))
    content = [{"type": "image", "image": picture(i * 10 + k)} for k in range(images)]
    return [{"role": "user", "content": content + [{"type": "text", "text": text}]}]


def requests():
    """Different prompt lengths, 0 to 2 images, different output lengths (EOS held off)."""
    return [
        (conversation(i, images=i % 3), dict(max_new_tokens=4 + 5 * i, min_new_tokens=4 + 5 * i))
        for i in range(7)
    ]


def test_batched_greedy_equals_one_by_one(model, engine):
    alone = [model.chat(msgs, **kw).token_ids for msgs, kw in requests()]
    handles = [engine.submit(msgs, **kw) for msgs, kw in requests()]  # 7 requests, 3 slots: they queue
    together = [h.result(60).token_ids for h in handles]
    assert together == alone
    assert [len(t) for t in together] == [4 + 5 * i for i in range(7)]
    assert all(h.result().finish_reason == "length" for h in handles)


def test_inference_layout_decodes_the_same(tmp_path):
    """fuse=True (fused q/k/v and gate/up, oneDNN-layout weights: what `vislang serve` runs)
    batched in the engine gives the plain model's one-by-one tokens."""
    llava_folder(tmp_path)
    model, fused = vislang.load(tmp_path), vislang.load(tmp_path, fuse=True)
    from tiny import inference_layout

    assert inference_layout(fused.language_model)
    alone = [model.chat(msgs, **kw).token_ids for msgs, kw in requests()]
    with Engine(fused, max_batch=3, max_len=160, max_images=3) as eng:
        handles = [eng.submit(msgs, **kw) for msgs, kw in requests()]
        assert [h.result(60).token_ids for h in handles] == alone


def test_greedy_stops_at_eos_like_chat(model, engine):
    msgs = conversation(3, images=1)
    reply = model.chat(msgs, max_new_tokens=40)
    done = engine.generate(msgs, max_new_tokens=40)
    assert done.token_ids == reply.token_ids
    assert done.usage == reply.usage
    assert done.finish_reason == ("stop" if len(reply.token_ids) < 40 else "length")


def test_stream_equals_result_and_decode(model, engine):
    handle = engine.submit(conversation(5), max_new_tokens=30, min_new_tokens=30)
    deltas = list(handle)
    done = handle.result()
    assert len(deltas) > 1
    assert "".join(deltas) == done.text == model.tokenizer.decode(done.token_ids)


def test_async_stream_equals_result(engine):
    async def collect():
        handle = engine.submit(conversation(6), max_new_tokens=20, min_new_tokens=20)
        return [d async for d in handle], handle.result()

    deltas, done = asyncio.run(collect())
    assert "".join(deltas) == done.text and len(done.token_ids) == 20


def test_stop_string_ends_generation_and_is_not_returned(model, engine):
    msgs = conversation(2)
    full = engine.generate(msgs, max_new_tokens=30, min_new_tokens=30)
    words = full.text.split(" ")
    stop = " ".join(words[3:5])  # two words from the middle
    cut = full.text.index(stop)
    handle = engine.submit(msgs, max_new_tokens=30, min_new_tokens=30, stop=[stop])
    deltas = list(handle)
    done = handle.result()
    assert done.finish_reason == "stop"
    assert done.text == full.text[:cut] == "".join(deltas)
    assert stop not in "".join(deltas)
    assert len(done.token_ids) < 30


def test_seeded_sampling_repeats_and_is_batch_independent(engine):
    kw = dict(max_new_tokens=16, min_new_tokens=16, do_sample=True, temperature=1.5, seed=7)
    msgs = conversation(4)
    alone = engine.generate(msgs, **kw).token_ids
    others = [engine.submit(conversation(i), max_new_tokens=20, min_new_tokens=20) for i in range(2)]
    again = engine.submit(msgs, **kw)
    assert again.result(60).token_ids == alone
    assert engine.generate(msgs, **{**kw, "seed": 8}).token_ids != alone
    for h in others:
        h.result(60)


def test_repetition_penalty_matches_generate(model, engine):
    msgs = conversation(1)
    kw = dict(max_new_tokens=24, min_new_tokens=24, repetition_penalty=1.8)
    assert engine.generate(msgs, **kw).token_ids == model.chat(msgs, **kw).token_ids
    assert (
        engine.generate(msgs, **kw).token_ids
        != engine.generate(msgs, max_new_tokens=24, min_new_tokens=24).token_ids
    )


def test_cancel_frees_the_slot(engine):
    handle = engine.submit(conversation(0), max_new_tokens=120, min_new_tokens=120)
    stream = iter(handle)
    next(stream)
    handle.cancel()
    done = handle.result(30)
    assert done.finish_reason == "cancelled" and len(done.token_ids) < 120
    deadline = time.time() + 5
    while engine.busy_slots and time.time() < deadline:
        time.sleep(0.01)
    assert engine.busy_slots == 0
    assert engine.cache.lengths == [0, 0, 0]
    assert len(engine.generate(conversation(1), max_new_tokens=3, min_new_tokens=3).token_ids) == 3


def test_repeated_image_reuses_features_and_prefix(model):
    with Engine(model, max_batch=2, max_len=160) as eng:
        image = picture(3)
        first = [
            {
                "role": "user",
                "content": [{"type": "image", "image": image}, {"type": "text", "text": "describe it"}],
            }
        ]
        other_question = [
            {
                "role": "user",
                "content": [{"type": "image", "image": image}, {"type": "text", "text": "a red circle ?"}],
            }
        ]
        other_prefix = [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hello"}, {"type": "image", "image": image.copy()}],
            }
        ]
        a = eng.generate(first, max_new_tokens=12, min_new_tokens=12)
        assert a.cached == {"image_features": 0, "prefix_tokens": 0}
        b = eng.generate(other_question, max_new_tokens=12, min_new_tokens=12)
        assert b.cached["prefix_tokens"] > 0  # same prompt up to the image: its KV is reused
        c = eng.generate(other_prefix, max_new_tokens=12, min_new_tokens=12)
        assert c.cached == {"image_features": 1, "prefix_tokens": 0}  # new text before it: features only
        for msgs, got in ((first, a), (other_question, b), (other_prefix, c)):
            assert got.token_ids == model.chat(msgs, max_new_tokens=12, min_new_tokens=12).token_ids


def test_bad_input_fails_in_submit_and_the_engine_goes_on(engine, tmp_path):
    broken = tmp_path / "broken.png"
    picture(1).save(broken)
    broken.write_bytes(broken.read_bytes()[:60])
    with pytest.raises(VislangError):
        engine.submit([{"role": "user", "content": [{"type": "image", "image": str(broken)}]}])
    with pytest.raises(VislangError, match="at most 3"):
        engine.submit(conversation(0, images=4))
    with pytest.raises(PromptTooLongError):
        engine.submit([{"role": "user", "content": "hello " * 200}])
    with pytest.raises(ValueError):
        engine.submit(conversation(0), max_new_tokens=2, min_new_tokens=5)
    assert len(engine.generate(conversation(2), max_new_tokens=5, min_new_tokens=5).token_ids) == 5


def prefilled_slots(lm, prompts, n_slots):
    """A SlotCache with prompt i prefilled alone into slot i."""
    from vislang.generation.slots import SlotCache

    slots = SlotCache.for_decoder(lm, n_slots, 32)
    for s, ids in enumerate(prompts):
        lm(input_ids=ids, cache=slots.view(s), last_only=True)
    return slots


def decode_step_matches_plain_cache(lm, slots, rows_prompts):
    """One batched step over rows 0..n-1 gives, per row, the logits of its prompt decoded alone."""
    nxt = torch.arange(7, 7 + len(rows_prompts))[:, None]
    positions, mask = slots.begin_step(len(rows_prompts))
    batched = lm(input_ids=nxt, attention_mask=mask, position_ids=positions, cache=slots)[:, -1]
    for row, ids in enumerate(rows_prompts):
        ref = lm(input_ids=torch.cat([ids, nxt[row : row + 1]], dim=1))[:, -1]
        assert float((batched[row] - ref[0]).abs().max()) <= 1e-5


def test_slot_cache_decodes_rows_of_different_lengths_like_a_kv_cache(model):
    """The engine's per-row positions and masks give the logits a plain batch-1 KV cache gives."""
    lm = model.language_model
    torch.manual_seed(0)
    prompts = [torch.randint(6, 150, (1, n)) for n in (3, 9, 5)]
    with torch.inference_mode():
        slots = prefilled_slots(lm, prompts, 3)
        decode_step_matches_plain_cache(lm, slots, prompts)
    assert slots.lengths == [4, 10, 6]


def test_slot_cache_move_keeps_a_sequence_decodable(model):
    """A sequence moved into a freed slot (the engine's compaction) decodes as if never moved."""
    lm = model.language_model
    torch.manual_seed(1)
    prompts = [torch.randint(6, 150, (1, n)) for n in (4, 7, 11)]
    with torch.inference_mode():
        slots = prefilled_slots(lm, prompts, 4)
        slots.free(0)
        slots.move(2, 0)  # rows 0, 1 now hold prompts 2 and 1
        assert slots.lengths == [11, 7, 0, 0]
        decode_step_matches_plain_cache(lm, slots, [prompts[2], prompts[1]])


def test_engine_keeps_busy_slots_in_the_first_rows(engine, monkeypatch):
    """When the request in slot 0 ends first, the later ones move up: every decode step computes
    busy rows only."""
    steps = []
    real_begin = engine.cache.begin_step

    def begin_step(n):
        steps.append((n, [run is not None for run in engine.slots]))
        return real_begin(n)

    monkeypatch.setattr(engine.cache, "begin_step", begin_step)
    kw = [dict(max_new_tokens=k, min_new_tokens=k) for k in (3, 30, 30)]
    handles = [engine.submit(conversation(i, images=0), **kw[i]) for i in range(3)]
    assert [len(h.result(60).token_ids) for h in handles] == [3, 30, 30]
    assert [n for n, _ in steps].count(2) >= 25  # the two long ones went on as rows 0 and 1
    assert all(busy == [True] * n + [False] * (len(busy) - n) for n, busy in steps)


def test_requests_arriving_together_are_prefilled_together(model, monkeypatch):
    """Requests waiting at the same moment share one padded prefill (0, 1 and 2 images, different
    lengths); each still gets the tokens it gets alone."""
    import threading

    convs = [conversation(i, images=i % 3) for i in range(4)]
    kw = dict(max_new_tokens=6, min_new_tokens=6)
    alone = [model.chat(c, **kw).token_ids for c in convs]
    with Engine(model, max_batch=4, max_len=160, max_images=3) as eng:
        gate, groups = threading.Event(), []
        real_admit, real_together = eng._admit, eng._prefill_together

        def admit():
            gate.wait(30)  # hold the model thread until every request is queued
            real_admit()

        def together(runs):
            groups.append(len(runs))
            return real_together(runs)

        monkeypatch.setattr(eng, "_admit", admit)
        monkeypatch.setattr(eng, "_prefill_together", together)
        handles = [eng.submit(c, **kw) for c in convs]
        gate.set()
        assert [h.result(60).token_ids for h in handles] == alone
    assert groups == [4]


def test_slot_batch_view_fills_slots_like_prefilling_alone(model):
    from vislang.generation.slots import SlotCache

    lm = model.language_model
    torch.manual_seed(2)
    prompts = [torch.randint(6, 150, (1, n)) for n in (5, 12, 8)]
    together = SlotCache.for_decoder(lm, 4, 32)
    T = 12
    ids, mask = torch.zeros(3, T, dtype=torch.long), torch.zeros(3, T, dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, T - p.shape[1] :], mask[row, T - p.shape[1] :] = p[0], 1
    with torch.inference_mode():
        alone = prefilled_slots(lm, prompts, 3)
        view = together.batch_view([3, 0, 1], [5, 12, 8])
        lm(input_ids=ids, attention_mask=mask, cache=view, last_only=True)
    assert together.lengths == [12, 8, 0, 5]
    for s_alone, s_together, n in [(0, 3, 5), (1, 0, 12), (2, 1, 8)]:
        for k_alone, k_together in zip(alone.keys, together.keys):
            assert float((k_alone[s_alone, :, :n] - k_together[s_together, :, :n]).abs().max()) <= 1e-5


def test_static_batch_with_different_image_counts_equals_one_by_one(model):
    """chat_batch: left padding, rows with 0, 1 and 2 images in one forward."""
    convs = [conversation(i, images=i % 3) for i in range(5)]
    kw = dict(max_new_tokens=10, min_new_tokens=10)
    batched = model.chat_batch(convs, **kw)
    assert [r.token_ids for r in batched] == [model.chat(c, **kw).token_ids for c in convs]
