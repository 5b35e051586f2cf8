"""What OpenAI clients send and expect beyond the common path: JSON nulls, top_p 0, n choices,
logprobs (streamed and whole, checked against the model's own probabilities), the served model's
name (404 model_not_found otherwise, GET /v1/models/{id}), OpenAI's context-length wording, and
base64 embeddings."""

import base64
import json

import numpy as np
import openai
import pytest
import torch

import vislang
from test_serve import KEY, client, post, served, start_server, text, user
from tiny import llava_folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("openai_model")
    llava_folder(model_dir)
    work = tmp_path_factory.mktemp("openai_work")
    proc, base = start_server(model_dir, work, "--api-key", KEY)
    yield {"base": base, "model_dir": model_dir}
    proc.terminate()
    proc.wait(10)


def chat(server, **fields):
    body = {"messages": user(text("describe it hello")), "max_tokens": 6, **fields}
    return post(server, json.dumps(body).encode())


def test_json_nulls_are_accepted(server):
    nulls = dict.fromkeys(
        [
            "model",
            "temperature",
            "top_p",
            "n",
            "stream",
            "stream_options",
            "stop",
            "seed",
            "repetition_penalty",
            "logprobs",
            "top_logprobs",
            "max_completion_tokens",
        ]
    )
    status, body = chat(server, **nulls)
    assert status == 200, body
    assert body["choices"][0]["logprobs"] is None  # the key is there, as litellm expects


def test_top_p_zero_is_greedy(server):
    _, greedy = chat(server, temperature=0)
    _, top0 = chat(server, temperature=1.0, top_p=0, seed=5)
    assert top0["choices"][0]["message"] == greedy["choices"][0]["message"]


def test_n_choices_with_a_seed(server):
    c = client(server)
    ask = dict(model=served(server), messages=user(text("hello")), max_tokens=8, temperature=1.5, seed=3, n=3)
    first, again = c.chat.completions.create(**ask), c.chat.completions.create(**ask)
    assert [ch.index for ch in first.choices] == [0, 1, 2]
    texts = [ch.message.content for ch in first.choices]
    assert texts == [ch.message.content for ch in again.choices]  # seeded: the same three
    assert len(set(texts)) > 1  # each choice samples its own stream
    assert first.usage.completion_tokens >= 3  # summed over the choices, the prompt counted once
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens


def test_logprobs_match_the_models_probabilities(server):
    c = client(server)
    messages = user(text("what is in the picture ?"))
    reply = c.chat.completions.create(
        model=served(server), messages=messages, max_tokens=5, logprobs=True, top_logprobs=3
    )
    content = reply.choices[0].logprobs.content
    assert 1 <= len(content) <= 5
    for entry in content:  # greedy: the chosen token is the likeliest
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-6)
        assert [t.logprob for t in entry.top_logprobs] == sorted(
            (t.logprob for t in entry.top_logprobs), reverse=True
        )
    model = vislang.load(server["model_dir"])
    ids, _ = model.build_prompt(
        [{"role": "user", "content": [{"type": "text", "text": "what is in the picture ?"}]}]
    )
    with torch.no_grad():
        probs = model(input_ids=torch.tensor([ids])).logits[0, -1].softmax(-1)
    first = model.tokenizer.decode([int(probs.argmax())], skip_special_tokens=False)
    assert content[0].token == first
    assert np.exp(content[0].logprob) == pytest.approx(float(probs.max()), abs=1e-4)
    stream = c.chat.completions.create(
        model=served(server), messages=messages, max_tokens=5, logprobs=True, top_logprobs=3, stream=True
    )
    streamed = [
        e for ch in stream if ch.choices and ch.choices[0].logprobs for e in ch.choices[0].logprobs.content
    ]
    assert [(e.token, round(e.logprob, 5)) for e in streamed] == [
        (e.token, round(e.logprob, 5)) for e in content
    ]


def test_the_served_model_name(server):
    c = client(server)
    assert c.models.retrieve(served(server)).id == served(server)
    with pytest.raises(openai.NotFoundError) as err:
        c.models.retrieve("gpt-4o")
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="gpt-4o", messages=user(text("hello")), max_tokens=2)


def test_context_length_in_openais_words(server):
    status, body = chat(server, messages=user(text("hello " * 400)), max_tokens=10)
    assert status == 400
    assert body["error"]["code"] == "context_length_exceeded"
    assert body["error"]["message"].startswith("This model's maximum context length is 256 tokens.")
    assert "in the messages, 10 in the completion" in body["error"]["message"]


def test_max_tokens_omitted_runs_to_the_end_of_the_context(server):
    status, body = post(server, json.dumps({"messages": user(text("hello"))}).encode())
    assert status == 200
    if body["choices"][0]["finish_reason"] == "length":  # it ran until the 256-token context was full
        assert body["usage"]["total_tokens"] == 256
    else:
        assert body["choices"][0]["finish_reason"] == "stop"


def test_base64_embeddings():
    from fastapi.testclient import TestClient

    from vislang.serve.app import ServerSettings, create_app

    class Encoder:  # the server's side of embeddings is under test, not an encoder
        def get_text_features(self):
            pass

        def embed(self, images=None, texts=None):
            return {"text_embeds": torch.tensor([[0.25, -1.5, 3.0]])}

    app = create_app(Encoder(), ServerSettings(model_name="enc"))
    with TestClient(app) as http:
        floats = http.post("/v1/embeddings", json={"input": "a"}).json()["data"][0]["embedding"]
        b64 = http.post("/v1/embeddings", json={"input": "a", "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    assert vector.tolist() == floats == [0.25, -1.5, 3.0]
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key="k", http_client=TestClient(app))
    assert sdk.embeddings.create(model="enc", input="a").data[0].embedding == [0.25, -1.5, 3.0]
