"""Scoring an OpenAI-compatible endpoint: `vislang serve` scored through EndpointModel gives the same
predictions and report as the same checkpoint loaded in process; retries, refusals, the concurrency
bound and reply order checked against a mock transport; images travel pixel for pixel."""

import json
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

import vislang
from test_serve import KEY, start_server
from tiny import llava_folder
from vislang.data.world import WorldConfig
from vislang.data.world.scene_questions import QTYPES as SCENE_QTYPES
from vislang.eval import endpoint
from vislang.eval.endpoint import EndpointError, EndpointModel, data_url, image_from_data_url
from vislang.eval.world import build_samples, evaluate_samples

URL = "http://mock.test/v1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("endpoint_model")
    llava_folder(model_dir)
    work = tmp_path_factory.mktemp("endpoint_work")
    proc, base = start_server(model_dir, work, "--api-key", KEY)
    try:
        yield {"base": base, "model_dir": model_dir}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_served_model_scores_as_the_model_in_process(server):
    quick = tuple(q for q in SCENE_QTYPES if q != "caption")  # a caption takes 128 tokens: slow in process
    samples = build_samples(("scene",), 12, seed=0, cfg=WorldConfig(64, 64, qtypes=quick))
    ask = dict(max_new_tokens=8, batch_size=16, progress=False, examples=len(samples))
    local = evaluate_samples(vislang.load(server["model_dir"]), samples, **ask)
    name = server["model_dir"].name
    with EndpointModel(server["base"] + "/v1", name, api_key=KEY, concurrency=4) as remote:
        served = evaluate_samples(remote, samples, **ask)
        assert remote.name == f"{name} @ {server['base']}/v1"
        assert remote.requests == served["config"]["questions"] and remote.retried == 0
    # every row is in the examples: the same replies, word for word, so the same scores
    predictions = [e["prediction"] for e in local["examples"]]
    assert len(predictions) == len(samples) and any(predictions)
    assert [e["prediction"] for e in served["examples"]] == predictions
    local.pop("seconds"), served.pop("seconds")
    assert served == local


def test_a_wrong_key_is_refused_at_once_with_the_servers_reason(server):
    with EndpointModel(server["base"] + "/v1", None, api_key="wrong", backoff=30) as remote:
        with pytest.raises(EndpointError, match="401") as err:
            remote.chat([{"role": "user", "content": "hello"}], max_new_tokens=2)
        assert remote.requests == 1
    assert "/v1/chat/completions" in str(err.value)


# ---- against a mock transport --------------------------------------------------------------------


def completion(text: str) -> httpx.Response:
    return httpx.Response(
        200, json={"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
    )


def question(request: httpx.Request) -> str:
    return json.loads(request.content)["messages"][0]["content"][-1]["text"]


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


def mock_model(handler, **kw) -> EndpointModel:
    return EndpointModel(URL, "m", transport=httpx.MockTransport(handler), **kw)


@pytest.fixture
def waits(monkeypatch):
    slept = []
    monkeypatch.setattr(endpoint, "sleep", slept.append)
    return slept


def replies_then(*statuses):
    """A handler answering with these statuses in turn, then 200; it records every request."""
    seen = []

    def handler(request):
        seen.append(request)
        if len(seen) <= len(statuses):
            status, headers = statuses[len(seen) - 1]
            return httpx.Response(status, headers=headers, json={"error": {"message": f"busy {status}"}})
        return completion("a red circle")

    return handler, seen


def test_5xx_and_429_are_retried_with_exponential_backoff(waits):
    handler, seen = replies_then((503, {}), (500, {}), (429, {}))
    model = mock_model(handler, backoff=0.25)
    assert model.chat(ask("what is it ?"), max_new_tokens=5) == "a red circle"
    assert waits == [0.25, 0.5, 1.0]
    assert len(seen) == 4 and model.retried == 3


def test_retry_after_is_honoured(waits):
    handler, _ = replies_then((429, {"Retry-After": "3"}), (503, {"Retry-After": "7200"}))
    assert mock_model(handler).chat(ask("hi")) == "a red circle"
    assert waits == [3.0, endpoint.MAX_WAIT]  # an hour is more than any wait is allowed to be


def test_connection_errors_are_retried(waits):
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return completion("yes")

    assert mock_model(handler, backoff=1.0).chat(ask("hi")) == "yes"
    assert waits == [1.0]


def test_a_400_is_raised_at_once_with_the_servers_message(waits):
    handler, seen = replies_then((400, {}))
    with pytest.raises(EndpointError, match="busy 400"):
        mock_model(handler).chat(ask("hi"))
    assert len(seen) == 1 and waits == []


def test_giving_up_names_the_url_and_the_status(waits):
    handler, seen = replies_then(*[(502, {})] * 10)
    with pytest.raises(EndpointError) as err:
        mock_model(handler, retries=2, backoff=0.1).chat(ask("hi"))
    assert f"{URL}/chat/completions" in str(err.value) and "502" in str(err.value)
    assert len(seen) == 3 and waits == [0.1, 0.2]


def test_a_404_without_v1_says_where_the_api_usually_is(waits):
    model = EndpointModel(
        "http://mock.test", "m", transport=httpx.MockTransport(lambda r: httpx.Response(404))
    )
    with pytest.raises(EndpointError, match="ending in /v1"):
        model.chat(ask("hi"))


def test_concurrency_is_bounded_and_order_kept():
    lock, flight = threading.Lock(), {"now": 0, "most": 0}

    def handler(request):
        with lock:
            flight["now"] += 1
            flight["most"] = max(flight["most"], flight["now"])
        k = int(question(request).split()[-1])
        time.sleep(0.002 * (k % 5))  # later questions often finish first
        with lock:
            flight["now"] -= 1
        return completion(f"answer {k}")

    model = mock_model(handler, concurrency=3)
    replies = model.chat_batch([ask(f"question {k}") for k in range(24)], max_new_tokens=4)
    assert replies == [f"answer {k}" for k in range(24)]
    assert flight["most"] == 3  # three at once, never more


def test_the_request_is_greedy_openai_chat_with_images_and_frames():
    bodies, headers = [], []

    def handler(request):
        bodies.append(json.loads(request.content))
        headers.append(request.headers)
        return completion(None)  # a reply without text reads as ""

    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8))
    frames = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(3)]
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {
            "role": "user",
            "content": [
                {"type": "image", "image": picture},
                {"type": "video", "video": frames},
                {"type": "text", "text": "what moved ?"},
            ],
        },
    ]
    assert mock_model(handler, api_key="k").chat(messages, max_new_tokens=7) == ""
    body = bodies[0]
    assert headers[0]["authorization"] == "Bearer k"
    assert {k: body[k] for k in ("model", "temperature", "seed", "max_tokens")} == {
        "model": "m",
        "temperature": 0,
        "seed": 0,
        "max_tokens": 7,
    }
    assert body["messages"][0] == {"role": "system", "content": "Answer briefly."}
    parts = body["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["image_url"] * 4 + ["text"]
    sent = [np.asarray(image_from_data_url(p["image_url"]["url"])) for p in parts[:4]]
    for got, want in zip(sent, [picture, *frames]):
        assert np.array_equal(got, np.asarray(want))
    assert parts[-1] == {"type": "text", "text": "what moved ?"}


def test_data_urls_round_trip_the_pixels(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "p.png")
    for source in (Image.fromarray(pixels), tmp_path / "p.png", pixels):
        url = data_url(source)
        assert url.startswith("data:image/png;base64,")
        assert np.array_equal(np.asarray(image_from_data_url(url)), pixels)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="http"):
        EndpointModel("localhost:8000/v1", "m")
    with pytest.raises(ValueError, match="concurrency"):
        EndpointModel(URL, "m", concurrency=0)
    with pytest.raises(ValueError, match="'audio'"):
        mock_model(lambda r: completion("x")).chat([{"role": "user", "content": [{"type": "audio"}]}])
