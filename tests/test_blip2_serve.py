"""BLIP-2 and InstructBLIP as users run them: `vislang serve` (fused decoder weights, the engine, the
OpenAI route) answers what `chat` answers, and `vislang chat FOLDER IMAGE -p ...` prints it."""

import base64
import io
import subprocess
import sys

import pytest
import torch

import vislang
from blip2_tiny import blip2_folder, picture

QUESTION = "what is in the picture ?"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=[("blip2", "llama"), ("blip2", "opt"), ("instructblip", "llama")])
def folder(request, tmp_path_factory):
    family, text = request.param
    path = tmp_path_factory.mktemp(f"{family}_{text}")
    blip2_folder(
        path, instruct=family == "instructblip", text=text, seed=2 if family == "instructblip" else 1
    )
    return path


def png_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_chat_completion_through_the_server(folder):
    from fastapi.testclient import TestClient

    from vislang.serve.app import ServerSettings, create_app

    image = picture(7)
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]}
    ]
    want = vislang.load(folder).chat(messages, max_new_tokens=6, min_new_tokens=6)
    served = vislang.load(folder, fuse=True)
    from tiny import inference_layout

    assert inference_layout(served.language_model)
    app = create_app(served, ServerSettings(model_name="m", max_batch=2, max_len=128))
    parts = [{"type": "image_url", "image_url": {"url": png_url(image)}}, {"type": "text", "text": QUESTION}]
    body = {"model": "m", "messages": [{"role": "user", "content": parts}], "max_tokens": 6, "temperature": 0}
    with TestClient(app) as http:
        r = http.post("/v1/chat/completions", json={**body, "min_tokens": 6})
        too_many = http.post(
            "/v1/chat/completions",
            json={**body, "messages": [{"role": "user", "content": parts * 40}]},
        )
    app.state.engine.shutdown()
    assert r.status_code == 200, r.text
    said = served.tokenizer.decode(want.token_ids, skip_special_tokens=True)
    assert r.json()["choices"][0]["message"]["content"] == said and said.strip() == want.text
    assert r.json()["usage"]["prompt_tokens"] == want.usage["prompt_tokens"]
    assert too_many.status_code == 400 and "images" in too_many.json()["error"]["message"]


def test_cli_chat_prints_the_library_answer(folder, tmp_path):
    image = tmp_path / "pic.png"
    picture(3).save(image)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "vislang",
            "chat",
            "--model",
            str(folder),
            str(image),
            "-p",
            QUESTION,
            "--max-new-tokens",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": str(image)}, {"type": "text", "text": QUESTION}],
        }
    ]
    assert out.stdout.strip() == str(vislang.load(folder).chat(messages, max_new_tokens=5))
