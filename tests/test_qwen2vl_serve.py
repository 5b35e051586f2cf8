"""`vislang serve --model` with a Qwen2-VL folder, as a real process on loopback: image_url and vLLM's
video_url parts through the official openai client, per-request resolution, and refusals (an aspect
ratio over 200, a video over the frame limit, a corrupt video, a wrong mime type) as 4xx with a
reason while the server stays up."""

import base64
import io
import json
import urllib.error
import urllib.request

import av
import numpy as np
import openai
import pytest

from qwen_tiny import qwen_folder, random_image
from test_serve import KEY, start_server


def png_url(image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def mp4_bytes(frames=6, fps=4, size=(64, 48)):
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
            pixels[:, (i * 8) % size[0] : (i * 8) % size[0] + 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def video_url(data, mime="video/mp4"):
    return f"data:{mime};base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("serve_qwen")
    qwen_folder(model_dir, v25=True)
    work = tmp_path_factory.mktemp("serve_qwen_work")
    proc, base = start_server(model_dir, work, "--api-key", KEY, "--max-frames", "16", "--model-name", "qwen")
    yield base
    proc.terminate()
    proc.wait(10)


def post(base, body):
    req = urllib.request.Request(
        base + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def user(*parts):
    return [{"role": "user", "content": [*parts, {"type": "text", "text": "describe it"}]}]


def test_image_and_video_through_the_openai_client(server):
    client = openai.OpenAI(base_url=server + "/v1", api_key=KEY)
    image = {"type": "image_url", "image_url": {"url": png_url(random_image(90, 60, 1))}}
    video = {"type": "video_url", "video_url": {"url": video_url(mp4_bytes())}}
    out = client.chat.completions.create(model="qwen", messages=user(video, image), max_tokens=5)
    assert out.usage.completion_tokens >= 1
    assert out.usage.prompt_tokens > 20  # the video's and the image's tokens are in the prompt


def test_per_request_resolution(server):
    image = {"type": "image_url", "image_url": {"url": png_url(random_image(300, 200, 2))}}
    body = {"messages": user(image), "max_tokens": 2}
    status, big = post(server, body)
    status2, small = post(server, {**body, "mm_processor_kwargs": {"max_pixels": 56 * 56}})
    assert status == status2 == 200
    assert small["usage"]["prompt_tokens"] < big["usage"]["prompt_tokens"]


@pytest.mark.parametrize(
    "part,needle",
    [
        ({"type": "image_url", "image_url": {"url": png_url(random_image(1000, 4, 3))}}, "200"),
        ({"type": "video_url", "video_url": {"url": video_url(b"\x00\x01garbage" * 100)}}, "video"),
        ({"type": "video_url", "video_url": {"url": video_url(mp4_bytes(), "text/plain")}}, "not a video"),
        ({"type": "video_url", "video_url": {"url": "https://example.org/a.mp4"}}, "video_url must be"),
    ],
)
def test_bad_media_is_a_400_with_a_reason(server, part, needle):
    status, body = post(server, {"messages": user(part), "max_tokens": 2})
    assert status == 400
    assert needle in body["error"]["message"]
    with urllib.request.urlopen(server + "/health", timeout=5) as r:
        assert r.status == 200


def test_video_over_the_frame_limit(server):
    """A file is sampled within the server's frame limit (Qwen's rule: fewer frames per second for a
    long video); asking for more frames than the limit is refused, naming it."""
    clip = {"type": "video_url", "video_url": {"url": video_url(mp4_bytes(frames=40, fps=4))}}
    status, body = post(server, {"messages": user(clip), "max_tokens": 2, "mm_processor_kwargs": {"fps": 4}})
    assert status == 200  # 40 frames at 4 fps sampled down to the limit of 16
    options = {"fps": 4, "max_frames": 40}
    status, body = post(server, {"messages": user(clip), "max_tokens": 2, "mm_processor_kwargs": options})
    assert status == 400 and "16" in body["error"]["message"]
