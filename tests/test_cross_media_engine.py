"""Cross-attention models (IDEFICS v1 and vislang's Flamingo) through the continuous-batching engine
and the server: images are not in the token stream but read by gated cross-attention, so each slot
keeps the image states its generated tokens read. Batched greedy must equal `model.chat` one by one
with 0, 1 and 3 images per row in one batch (and a video clip for the Flamingo), whether the requests
arrive together or one after another; a repeated image skips the vision tower."""

import base64
import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

import vislang
from flamingo_tiny import tiny_flamingo
from idefics_tiny import idefics_folder
from vislang.generation.engine import Engine
from vislang.models.flamingo import Flamingo

WORDS = "what is in the picture ? a red circle blue square describe it hello and".split()
IMAGES_PER_ROW = (0, 1, 3)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("engine_idefics")
    idefics_folder(path, resampler=True, interval=1, alpha_type="vector")  # random non-zero gates
    return path


@pytest.fixture(scope="module", params=["idefics", "flamingo"])
def model(request, folder):
    return vislang.load(folder) if request.param == "idefics" else tiny_flamingo()


def picture(seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (24 + 5 * seed, 33, 3), dtype=np.uint8))


def conversation(i, n_images=None, video=False):
    """Row i: n images (cycling 0, 1, 3), text before, between and after them; or one clip."""
    n = IMAGES_PER_ROW[i % 3] if n_images is None else n_images
    rng = np.random.default_rng(100 + i)
    say = lambda k: " ".join(rng.choice(WORDS, k))  # noqa: E731
    content = [{"type": "text", "text": say(2)}]
    if video:
        clip = [picture(10 * i + j) for j in range(3)]
        return [{"role": "user", "content": content + [{"type": "video", "video": clip}, *content]}]
    for j in range(n):
        content += [{"type": "image", "image": picture(10 * i + j)}, {"type": "text", "text": say(1 + j)}]
    return [{"role": "user", "content": content}]


def requests(model, n=6):
    """Rows with 0, 1 and 3 images; for a model that reads clips, row 4 holds a video instead."""
    video = isinstance(model, Flamingo)
    return [
        (conversation(i, video=video and i == 4), dict(max_new_tokens=4 + 2 * i, min_new_tokens=4 + 2 * i))
        for i in range(n)
    ]


def alone(model, reqs):
    return [model.chat(msgs, **kw).token_ids for msgs, kw in reqs]


def test_images_change_the_answer(model):
    """The referee is sensitive: the same text with the images dropped decodes differently."""
    msgs, kw = requests(model)[2]  # three images
    text_only = [{"role": "user", "content": [p for p in msgs[0]["content"] if p["type"] == "text"]}]
    assert model.chat(msgs, **kw).token_ids != model.chat(text_only, **kw).token_ids


def arriving_together(engine, n):
    """Admit nothing until n requests are queued (or some are running), as if they came at once."""
    admit = engine._admit
    engine._admit = lambda: admit() if engine.waiting.qsize() >= n or any(engine.slots) else None


def test_batched_greedy_equals_one_by_one(model, monkeypatch):
    reqs = requests(model)
    want = alone(model, reqs)
    prefills = []
    forward = model.forward

    def counted(*args, **kwargs):
        if kwargs["input_ids"].shape[1] > 1:
            prefills.append(int((kwargs["input_ids"] == model.image_token_id).sum(1).max()))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counted)
    with Engine(model, max_batch=3, max_len=256) as engine:
        arriving_together(engine, len(reqs))
        together = [h.result(60).token_ids for h in [engine.submit(m, **kw) for m, kw in reqs]]
    assert together == want
    assert [len(t) for t in together] == [4 + 2 * i for i in range(6)]
    assert prefills[0] == 3  # the first three (0, 1 and 3 images) in one padded prefill


def test_decoded_logprobs_equal_a_full_forward(model):
    """Numbers, not only argmaxes: every token decoded in a batch of rows with 0, 1 and 3 images has
    the log-probability one uncached forward over prompt and answer gives it."""
    reqs = requests(model, 3)
    with Engine(model, max_batch=3, max_len=256) as engine:
        arriving_together(engine, 3)
        done = [h.result(60) for h in [engine.submit(m, logprobs=0, **kw) for m, kw in reqs]]
    for (msgs, _), d in zip(reqs, done):
        ids, inputs = model.build_prompt(msgs)
        full = torch.tensor([ids + d.token_ids[:-1]])
        # generated tokens read the image the prompt's last token saw (transformers' generate does the
        # same), even a generated token that happens to be <image> or end-of-document: so the
        # referee's mask repeats the prompt's last row over the answer instead of re-deriving it
        n = int((torch.tensor(ids) == model.image_token_id).sum())
        prompt_rows = model._media_locations(torch.tensor([ids]), n)
        answer_rows = prompt_rows[:, -1:].expand(1, full.shape[1] - len(ids), n)
        sees = torch.cat([prompt_rows, answer_rows], dim=1)
        with torch.inference_mode():
            out = model(input_ids=full, image_attention_mask=sees, **inputs)
            logp = out.logits[0, len(ids) - 1 :].log_softmax(-1)
        want = logp.gather(-1, torch.tensor(d.token_ids)[:, None])[:, 0]
        got = torch.tensor([e["logprob"] for e in d.logprobs])
        assert (got - want).abs().max() <= 1e-4


def test_staggered_arrivals_equal_one_by_one(model):
    """Requests joining a batch already decoding, in slots others left (rows move when slots compact)."""
    reqs = requests(model)
    want = alone(model, reqs)
    with Engine(model, max_batch=4, max_len=256) as engine:
        handles = []
        for msgs, kw in reqs:
            handles.append(engine.submit(msgs, logprobs=0, **kw))  # logprobs: to see tokens arrive
            while not handles[-1].token_logprobs:  # its first token, before the next one arrives
                time.sleep(0.005)
        got = [h.result(60).token_ids for h in handles]
    assert got == want


def test_same_prompt_twice_shares_its_prefill(model):
    msgs, kw = requests(model)[1]
    want = model.chat(msgs, **kw).token_ids
    with Engine(model, max_batch=3, max_len=256) as engine:
        arriving_together(engine, 3)
        handles = [engine.submit(msgs, **kw) for _ in range(2)]
        handles.append(engine.submit(conversation(5), max_new_tokens=3))
        got = [h.result(60) for h in handles]
    assert got[0].token_ids == got[1].token_ids == want
    assert got[1].cached["prefix_tokens"] == got[1].usage["prompt_tokens"]  # the copy of the first's KV


def test_repeated_image_hits_the_feature_cache(model):
    image = picture(99)

    def ask(before, after):
        content = [{"type": "text", "text": before}, {"type": "image", "image": image}]
        return [{"role": "user", "content": content + [{"type": "text", "text": after}]}]

    convs = [ask("hello", "what is it ?"), ask("a", "describe it"), ask("hello", "describe it")]
    want = [model.chat(m, max_new_tokens=5).token_ids for m in convs]
    with Engine(model, max_batch=2, max_len=256) as engine:
        done = [engine.generate(m, max_new_tokens=5) for m in convs]
        assert engine.features.hits == 2 and len(engine.features) == 1
    assert [d.token_ids for d in done] == want
    assert [d.cached["image_features"] for d in done] == [0, 1, 1]
    assert all(d.cached["prefix_tokens"] == 0 for d in done)  # no prefix cache for cross-attention


def test_decode_reads_only_the_image_the_prompt_ends_on(model):
    feats = [torch.full((3, 24), float(k)) for k in range(3)]
    tok, P = model.tokenizer, model.image_token_id
    a, b = (tok.encode(w, add_special_tokens=False) for w in ("a", "b"))
    ids = a + [P] + b + [P] + a + [P] + b
    assert model.decode_media(ids, feats).tolist() == feats[2][None].tolist()
    assert model.decode_media(ids, []) is None
    if isinstance(model, Flamingo):  # no end-of-document token: the latest image holds to the end
        assert model.decode_media(ids + [model.tokenizer.token_to_id("<|im_end|>")] + a, feats) is not None
    else:
        cut = ids + [model.cfg.eos_token_id] + a  # an end of document: no image after it
        assert model.decode_media(cut, feats) is None


def png_url(image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_chat_completion_through_the_server(model, folder):
    """As `vislang serve --model FOLDER` runs it: fused decoder weights, the engine, the OpenAI route."""
    from fastapi.testclient import TestClient

    from vislang.generation.quantize import quantize_decoder
    from vislang.serve.app import ServerSettings, create_app

    image, question = picture(7), "what is in the picture ?"
    want = model.chat(
        [
            {
                "role": "user",
                "content": [{"type": "image", "image": image}, {"type": "text", "text": question}],
            }
        ],
        max_new_tokens=6,
    )
    if isinstance(model, Flamingo):
        served = tiny_flamingo()  # the same seed: the same weights
        quantize_decoder(served.language_model, "fp32", fuse=True)
    else:
        served = vislang.load(folder, fuse=True)
    from tiny import inference_layout

    assert inference_layout(served.language_model)
    app = create_app(served, ServerSettings(model_name="m", max_batch=2, max_len=256))
    parts = [{"type": "image_url", "image_url": {"url": png_url(image)}}, {"type": "text", "text": question}]
    body = {"model": "m", "messages": [{"role": "user", "content": parts}], "max_tokens": 6}
    with TestClient(app) as http:
        r = http.post("/v1/chat/completions", json={**body, "temperature": 0})
    assert r.status_code == 200, r.text
    assert want.text and want.usage["completion_tokens"] == 6
    out = r.json()
    # chat() strips the reply's edges; the server sends the decoded tokens as they are
    said = served.tokenizer.decode(want.token_ids, skip_special_tokens=True)
    assert out["choices"][0]["message"]["content"] == said and said.strip() == want.text
    assert out["usage"]["completion_tokens"] == want.usage["completion_tokens"]
    app.state.engine.shutdown()
