"""BLIP-2 and InstructBLIP through the continuous-batching engine: batched greedy equals `chat` one
by one (requests together and staggered, rows with 0, 1 and 2 images), and the image-feature cache
keys on what the features depend on: InstructBLIP's instruction, which BLIP-2's features ignore."""

import time

import numpy as np
import pytest
import torch

import vislang
from blip2_tiny import QUERIES, blip2_folder, picture
from vislang.generation.engine import Engine

WORDS = "what is in the picture ? a red circle blue square describe it hello".split()
IMAGES_PER_ROW = (1, 0, 2)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Models this small run faster on one thread than on two that wait for each other (the engine
    thread takes the setting of the thread that creates it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["blip2", "instructblip"])
def model(request, tmp_path_factory):
    instruct = request.param == "instructblip"
    path = tmp_path_factory.mktemp(request.param)
    blip2_folder(path, instruct=instruct, text="llama", seed=2 if instruct else 1)
    return vislang.load(path)


def ask(text, images=()):
    content = [{"type": "image", "image": im} for im in images]
    return [{"role": "user", "content": content + [{"type": "text", "text": text}]}]


def requests(n=6):
    """Rows with 1, 0 and 2 images, different questions and answer lengths (EOS held off)."""
    out = []
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        text = " ".join(rng.choice(WORDS, size=2 + 2 * (i % 3)))
        images = [picture(10 * i + k) for k in range(IMAGES_PER_ROW[i % 3])]
        out.append((ask(text, images), dict(max_new_tokens=4 + 2 * i, min_new_tokens=4 + 2 * i)))
    return out


def alone(model, reqs):
    return [model.chat(msgs, **kw).token_ids for msgs, kw in reqs]


def arriving_together(engine, n):
    """Admit nothing until n requests are queued (or some are running), as if they came at once."""
    admit = engine._admit
    engine._admit = lambda: admit() if engine.waiting.qsize() >= n or any(engine.slots) else None


def test_images_and_instruction_change_the_answer(model):
    """The referee is sensitive: another image (and for InstructBLIP, the Q-Former's input) moves it."""
    msgs, kw = requests()[0]
    want = model.chat(msgs, **kw).token_ids
    assert model.chat(ask(msgs[0]["content"][-1]["text"], [picture(77)]), **kw).token_ids != want
    ids, inputs = model.build_prompt(msgs)
    assert ids[:QUERIES] == [model.image_token_id] * QUERIES
    if model.cfg.model_type == "instructblip":
        assert "qformer_input_ids" in inputs
        other = model.media_inputs_for([{"role": "user", "content": "a red circle"}])
        features = model.image_features(inputs["pixel_values"], **other)[0]
        assert (features - model.image_features(**inputs)[0]).abs().max() > 1e-2


def test_batched_greedy_equals_one_by_one(model, monkeypatch, caplog):
    reqs = requests()
    want = alone(model, reqs)
    prefill_rows = []
    forward = model.forward

    def counted(*args, **kwargs):
        if kwargs["input_ids"].shape[1] > 1 and kwargs.get("image_features"):
            prefill_rows.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counted)
    with Engine(model, max_batch=3, max_len=128) as engine:
        arriving_together(engine, len(reqs))
        together = [h.result(60).token_ids for h in [engine.submit(m, **kw) for m, kw in reqs]]
    assert together == want
    assert [len(t) for t in together] == [4 + 2 * i for i in range(6)]
    assert prefill_rows[0] == 3 and "prefill failed" not in caplog.text  # rows with 1, 0, 2 images at once


def test_staggered_arrivals_equal_one_by_one(model):
    """Requests joining a batch already decoding, in slots others left."""
    reqs = requests()
    want = alone(model, reqs)
    with Engine(model, max_batch=4, max_len=128) as engine:
        handles = []
        for msgs, kw in reqs:
            handles.append(engine.submit(msgs, logprobs=0, **kw))  # logprobs: to see tokens arrive
            while not handles[-1].token_logprobs:  # its first token, before the next one arrives
                time.sleep(0.005)
        got = [h.result(60).token_ids for h in handles]
    assert got == want


def test_feature_cache_keys_on_the_instruction(model):
    instruct = model.cfg.model_type == "instructblip"
    image = picture(99)
    first, other = ask("what is in the picture ?", [image]), ask("describe it", [image])
    same = ask("what is in the picture ?", [picture(99)])  # equal pixels, another object
    want = [model.chat(m, max_new_tokens=5).token_ids for m in (first, same, other)]
    with Engine(model, max_batch=2, max_len=128) as engine:
        done = []
        for msgs in (first, same, other):
            engine.prefixes.clear()  # so that the image tokens' KV is not reused whole
            done.append(engine.generate(msgs, max_new_tokens=5))
        assert [d.token_ids for d in done] == want
        # the same image and instruction: features from the cache; another instruction: InstructBLIP
        # computes them again, BLIP-2 (whose queries never read the text) reuses them
        assert [d.cached["image_features"] for d in done] == [0, 1, 0 if instruct else 1]
        assert len(engine.features) == (2 if instruct else 1)
        # kept, the image tokens' KV is reused whole for the same instruction; for another one too
        # by BLIP-2, not by InstructBLIP
        engine.prefixes.clear()
        again = [engine.generate(m, max_new_tokens=5) for m in (first, same, other)]
        assert [d.token_ids for d in again] == want
        assert [d.cached["prefix_tokens"] for d in again] == [0, QUERIES, 0 if instruct else QUERIES]


def test_chat_batch_equals_one_by_one(model):
    """chat_batch pads the rows (and InstructBLIP's instructions of different lengths) together."""
    reqs = requests(3)
    kw = dict(max_new_tokens=6, min_new_tokens=6)
    together = [r.token_ids for r in model.chat_batch([m for m, _ in reqs], **kw)]
    assert together == [model.chat(m, **kw).token_ids for m, _ in reqs]
