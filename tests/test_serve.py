"""`vislang serve` as a real process on loopback, driven by the official openai client and raw HTTP:
chat, streaming, models, every kind of bad input (a 4xx with a reason, the server still healthy),
and privacy (nothing of a request in logs or files unless retention is on)."""

import base64
import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib

import numpy as np
import openai
import pytest
from PIL import Image

from tiny import llava_folder

KEY = "test-key-123"
SECRET_PROMPT = "zebra-quokka-secret describe it"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(path, workdir, *extra):
    port = free_port()
    log = open(workdir / "server.log", "w")  # noqa: SIM115 (the server process writes it until the end)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "vislang", "serve", "--model", str(path), "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(base + "/health", timeout=1) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            time.sleep(0.1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("server did not start:\n" + (workdir / "server.log").read_text())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("serve_model")
    llava_folder(model_dir)
    work = tmp_path_factory.mktemp("serve_work")
    allowed = work / "allowed"
    allowed.mkdir()
    picture(0).save(allowed / "ok.png")
    picture(1).save(work / "outside.png")
    before = set(p for p in work.rglob("*"))
    proc, base = start_server(
        model_dir,
        work,
        "--api-key",
        KEY,
        "--max-images",
        "2",
        "--allow-url-domain",
        "localhost",
        "--file-root",
        str(allowed),
    )
    yield {"base": base, "work": work, "allowed": allowed, "before": before, "model_dir": model_dir}
    proc.terminate()
    proc.wait(10)


def picture(seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))


def data_url(image=None, raw=None, mime="image/png"):
    if raw is None:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        raw = buf.getvalue()
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


def client(server, key=KEY):
    return openai.OpenAI(base_url=server["base"] + "/v1", api_key=key, max_retries=0, timeout=60)


def served(server):
    """The model id the server reports: the checkpoint folder's name."""
    return server["model_dir"].name


def user(*parts):
    return [{"role": "user", "content": list(parts)}]


def text(t):
    return {"type": "text", "text": t}


def image(url):
    return {"type": "image_url", "image_url": {"url": url}}


def post(server, body: bytes, key=KEY, path="/v1/chat/completions"):
    req = urllib.request.Request(server["base"] + path, data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def healthy(server):
    with urllib.request.urlopen(server["base"] + "/health", timeout=5) as r:
        return r.status == 200


def test_models_and_chat_with_the_openai_client(server):
    c = client(server)
    assert [m.id for m in c.models.list().data] == [server["model_dir"].name]
    messages = user(image(data_url(picture(2))), text(SECRET_PROMPT))
    reply = c.chat.completions.create(model=served(server), messages=messages, max_tokens=12, seed=1)
    assert reply.object == "chat.completion"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 16 and 1 <= reply.usage.completion_tokens <= 12
    stream = c.chat.completions.create(
        model=served(server),
        messages=messages,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == reply.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    assert any(ch.choices and ch.choices[0].finish_reason for ch in chunks)


def test_raw_stream_ends_with_done(server):
    body = json.dumps({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 5, "stream": True})
    req = urllib.request.Request(server["base"] + "/v1/chat/completions", data=body.encode(), method="POST")
    req.add_header("Authorization", f"Bearer {KEY}")
    with urllib.request.urlopen(req, timeout=60) as r:
        events = [line for line in r.read().decode().split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][5:])["object"] == "chat.completion.chunk"


def png_header_only(width, height):
    """A PNG whose header claims width x height: the loader must refuse it before decoding."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def full_png(seed=3):
    buf = io.BytesIO()
    picture(seed).save(buf, format="PNG")
    return buf.getvalue()


BAD = {
    "truncated PNG": (lambda s: user(image(data_url(raw=full_png()[:80])), text("hi"))),
    "30000 x 30000 PNG bomb": (
        lambda s: user(image(data_url(raw=png_header_only(30000, 30000))), text("hi"))
    ),
    "non-image data URL": (
        lambda s: user(image("data:text/plain;base64," + base64.b64encode(b"hello").decode()))
    ),
    "too many images": (lambda s: user(*[image(data_url(picture(i))) for i in range(3)], text("hi"))),
    "http URL to 127.0.0.1": (lambda s: user(image(s["base"] + "/health"), text("hi"))),
    "http URL to localhost (allowed name, loopback address)": (
        lambda s: user(image(s["base"].replace("127.0.0.1", "localhost") + "/x.png"))
    ),
    "file:// outside the allowed folder": (lambda s: user(image((s["work"] / "outside.png").as_uri()))),
    "file:// escaping with ..": (lambda s: user(image(s["allowed"].as_uri() + "/../outside.png"))),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_images_get_a_400_with_a_reason(server, case):
    status, body = post(server, json.dumps({"messages": BAD[case](server), "max_tokens": 4}).encode())
    assert status == 400, body
    assert body["error"]["message"] and body["error"]["type"] == "invalid_request_error"
    assert healthy(server)


def test_file_url_inside_the_allowed_folder_works(server):
    status, body = post(
        server,
        json.dumps(
            {"messages": user(image((server["allowed"] / "ok.png").as_uri()), text("hi")), "max_tokens": 3}
        ).encode(),
    )
    assert status == 200, body


@pytest.mark.parametrize(
    "body,status,words",
    [
        (b"{not json", 400, "JSON"),
        (json.dumps({"messages": []}).encode(), 400, "messages"),
        (json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(), 400, "role"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}], "n": 99}).encode(), 400, "limit of 4"),
        (json.dumps({"messages": [{"role": "user", "content": "hello " * 5000}]}).encode(), 400, "context"),
    ],
    ids=["malformed JSON", "no messages", "unknown role", "n over the limit", "prompt over the context"],
)
def test_malformed_requests(server, body, status, words):
    got, reply = post(server, body)
    assert got == status, reply
    assert words.lower() in reply["error"]["message"].lower()
    assert healthy(server)


def test_a_25_mib_body_is_refused_from_its_header(server):
    """The server answers 413 as soon as it reads Content-Length, before a byte of the body."""
    host, port = server["base"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {KEY}\r\nContent-Length: {25 << 20}\r\n\r\n"
        )
        sock.sendall(head.encode())
        sock.sendall(b'{"messages": "' + b"x" * 1000)  # a start; the rest never needs to be sent
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    status = int(reply.split(b" ", 2)[1])
    body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert status == 413 and "limit" in body["error"]["message"]
    assert healthy(server)


def test_a_chunked_body_over_the_limit_is_refused(server):
    """No Content-Length: the body is counted as it arrives and refused at the limit."""
    import http.client

    host, port = server["base"].removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    piece = b"x" * (1 << 20)

    def body():
        yield b'{"messages": "'
        for _ in range(21):
            yield piece

    conn.request(
        "POST",
        "/v1/chat/completions",
        body=body(),
        headers={"Authorization": f"Bearer {KEY}", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    resp = conn.getresponse()
    assert resp.status == 413 and "limit" in json.loads(resp.read())["error"]["message"]
    conn.close()
    assert healthy(server)


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_api_key_guards_v1(server, key):
    status, body = post(
        server, json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(), key=key
    )
    assert status == 401 and "api key" in body["error"]["message"].lower()
    if key is not None:
        with pytest.raises(openai.AuthenticationError):
            client(server, key=key).models.list()
    assert healthy(server)


def test_embeddings_refused_for_a_generative_model(server):
    status, body = post(server, json.dumps({"input": "a cat"}).encode(), path="/v1/embeddings")
    assert status == 400 and "cannot embed" in body["error"]["message"]


def test_web_page_is_served(server):
    with urllib.request.urlopen(server["base"] + "/", timeout=5) as r:
        page = r.read().decode()
    assert "/v1/chat/completions" in page
    assert 'id="question"' in page


def test_nothing_of_a_request_is_logged_or_written(server):
    client(server).chat.completions.create(
        model=served(server), messages=user(image(data_url(picture(5))), text(SECRET_PROMPT)), max_tokens=4
    )
    log = (server["work"] / "server.log").read_text()
    assert "request " in log  # the server does log requests: ids, sizes, status
    assert "zebra-quokka" not in log
    assert base64.b64encode(full_png(5)).decode()[:40] not in log
    written = set(server["work"].rglob("*")) - server["before"] - {server["work"] / "server.log"}
    assert written == set()


def test_retention_strips_metadata_and_purge_removes_old_files(tmp_path):
    import hashlib

    from vislang.serve.retention import Retention

    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    buf = io.BytesIO()
    picture(7).save(buf, format="JPEG", exif=exif.tobytes())
    assert b"SecretCam" in buf.getvalue()
    keep = Retention(tmp_path / "kept", days=2)
    record = keep.store(
        [{"role": "user", "content": [{"type": "image", "image": buf.getvalue()}, text("q")]}], "a"
    )
    pngs = list((tmp_path / "kept").glob("*.png"))
    assert len(pngs) == 1 and b"SecretCam" not in pngs[0].read_bytes()
    assert pngs[0].stem == hashlib.sha256(pngs[0].read_bytes()).hexdigest()
    saved = json.loads(record.read_text())
    assert saved["messages"][0]["content"][0] == {"type": "image", "sha256": pngs[0].stem}
    assert keep.purge() == 0  # nothing is past its time yet
    three_days_ago = time.time() - 3 * 86400
    os.utime(pngs[0], (three_days_ago, three_days_ago))
    out = subprocess.run(
        [sys.executable, "-m", "vislang", "purge", str(tmp_path / "kept"), "--days", "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "removed 1" in out.stdout
    assert not pngs[0].exists() and record.exists()


@pytest.mark.parametrize(
    "address,public",
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.9", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("::1", False),
        ("fc00::1", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("224.0.0.1", False),
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
    ],
)
def test_only_public_addresses_may_be_fetched(address, public):
    from vislang.serve.images import is_public

    assert is_public(address) is public


def test_allowed_domains_match_whole_labels():
    from vislang.serve.images import domain_allowed

    assert domain_allowed("img.example.org", ["example.org"])
    assert domain_allowed("example.org.", ["example.org"])
    assert not domain_allowed("evilexample.org", ["example.org"])
    assert not domain_allowed("example.org.evil.com", ["example.org"])
