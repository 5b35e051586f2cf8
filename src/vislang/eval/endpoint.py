"""Any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp's server, a hosted API, `vislang serve`)
as a model the evaluation can score, exactly as it scores a model loaded in this process.

    from vislang.eval.endpoint import EndpointModel
    model = EndpointModel("http://localhost:8000/v1", "Qwen/Qwen2-VL-2B-Instruct", concurrency=8)
    report = evaluate_world(model, families=("scene",), n=200, batch_size=64)

base_url is the address the openai client takes: the one ending in /v1 (requests go to
{base_url}/chat/completions). Decoding is greedy (temperature 0, seed 0), so a served model and the
same model in process give the same answers.

Images travel as PNG data URLs, so the server decodes exactly the pixels given. A video goes as its
frames, one image part each: every server that reads images reads that, while a video part is an
extension few servers share. (A server may cap the images of one request, `vislang serve
--max-images`, vLLM's --limit-mm-per-prompt: raise it to the frames a video sample has.)

Connection errors, 429 and 5xx are retried with exponential backoff (Retry-After, when the server
sends one, is waited instead); any other 4xx is raised at once with the server's own message.
"""

from __future__ import annotations

import base64
import email.utils
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from time import sleep  # a module name of its own, so tests can stand in for the waits

from PIL import Image

from vislang.errors import VislangError
from vislang.processing.image import load_image
from vislang.processing.video import load_video

MAX_WAIT = 60.0  # seconds: no single wait between tries is longer, whatever the server asks


class EndpointError(VislangError):
    """A chat-completions request the endpoint refused, or that failed after every retry."""


def data_url(image) -> str:
    """An image (PIL image, path, bytes or array) as a base64 PNG data URL of its RGB pixels."""
    buf = io.BytesIO()
    load_image(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_from_data_url(url: str) -> Image.Image:
    """The image a data URL holds (the inverse of data_url)."""
    head, _, payload = url.partition(",")
    if not head.startswith("data:") or not head.endswith(";base64"):
        raise ValueError(f"not a base64 data URL: {url[:40]!r}")
    return load_image(base64.b64decode(payload))


def image_part(image) -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(image)}}


def openai_content(content) -> str | list[dict]:
    """vislang content parts -> OpenAI content parts; a video becomes its frames, one image part each."""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image":
            parts.append(image_part(part["image"]))
        elif kind == "video":
            parts += [image_part(frame) for frame in load_video(part["video"]).frames]
        else:
            raise ValueError(f"content part of type {kind!r}: expected 'text', 'image' or 'video'")
    return parts


def openai_messages(messages: list[dict]) -> list[dict]:
    """A vislang conversation as OpenAI chat-completions messages."""
    return [{"role": m["role"], "content": openai_content(m.get("content") or "")} for m in messages]


def retry_after(response) -> float | None:
    """The wait a 429 or 503 asks for, in seconds: Retry-After as a number or an HTTP date."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def server_message(response) -> str:
    """The reason a server gives: OpenAI's {"error": {"message": ...}}, else the body's text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return str(body)[:500]


class EndpointModel:
    """A model behind POST {base_url}/chat/completions, with chat and chat_batch like an in-process one.

    model: the name the server serves (None or "": left out, for servers of one model).
    api_key: sent as 'Authorization: Bearer KEY'. concurrency: the most requests in flight at once
    (chat_batch). retries: tries after the first, on connection errors, 429 and 5xx; the n-th retry
    waits backoff * 2**(n-1) seconds, or what Retry-After says. timeout: seconds per request.
    max_tokens_field: the request field of the answer budget; "max_tokens" is what nearly every
    server reads, OpenAI's reasoning models want "max_completion_tokens". transport: an
    httpx transport (tests, proxies)."""

    def __init__(
        self,
        base_url: str,
        model: str | None,
        api_key: str | None = None,
        concurrency: int = 8,
        retries: int = 4,
        timeout: float = 120.0,
        backoff: float = 0.5,
        temperature: float = 0,
        seed: int | None = 0,
        max_tokens_field: str = "max_tokens",
        transport=None,
    ):
        try:
            import httpx
        except ImportError as e:
            raise ImportError("EndpointModel needs httpx: pip install httpx") from e
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if concurrency < 1 or retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("need concurrency >= 1, retries >= 0, timeout > 0 and backoff >= 0")
        if max_tokens_field not in ("max_tokens", "max_completion_tokens"):
            raise ValueError(
                f"max_tokens_field must be max_tokens or max_completion_tokens, not {max_tokens_field!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model, self.concurrency, self.retries = model, concurrency, retries
        self.backoff, self.temperature, self.seed = backoff, temperature, seed
        self.max_tokens_field = max_tokens_field
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._httpx = httpx
        self._client = httpx.Client(headers=headers, timeout=timeout, limits=limits, transport=transport)
        self._lock = threading.Lock()  # guards the counters below, shared by chat_batch's threads
        self.requests = 0  # requests sent, retries included
        self.retried = 0

    @property
    def name(self) -> str:
        return f"{self.model} @ {self.base_url}"

    def request_body(self, messages: list[dict], max_new_tokens: int) -> dict:
        body = {"messages": openai_messages(messages), "temperature": self.temperature}
        if self.model:
            body["model"] = self.model
        body[self.max_tokens_field] = max_new_tokens
        if self.seed is not None:
            body["seed"] = self.seed
        return body

    def chat(self, messages: list[dict], max_new_tokens: int = 64) -> str:
        """The reply text to one conversation (vislang's message format)."""
        return self.post(self.request_body(messages, max_new_tokens))

    def chat_batch(self, conversations: list[list[dict]], max_new_tokens: int = 64) -> list[str]:
        """Every conversation's reply, in order, with at most `concurrency` requests in flight."""
        if len(conversations) <= 1 or self.concurrency == 1:
            return [self.chat(m, max_new_tokens) for m in conversations]
        workers = min(self.concurrency, len(conversations))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="endpoint")
        try:
            futures = [pool.submit(self.chat, m, max_new_tokens) for m in conversations]
            return [f.result() for f in futures]
        finally:  # on a failure, requests not yet sent are dropped rather than sent for nothing
            pool.shutdown(wait=True, cancel_futures=True)

    def post(self, body: dict) -> str:
        """POST one request with retries; the first choice's text."""
        failure = ""
        for attempt in range(self.retries + 1):
            with self._lock:
                self.requests += 1
                self.retried += attempt > 0
            try:
                response = self._client.post(self.url, json=body)
            except self._httpx.TransportError as e:  # refused, reset, timed out: worth another try
                failure = f"{type(e).__name__}: {e}"
                wait = None
            else:
                if response.is_success:
                    return reply_text(response, self.url)
                failure = f"HTTP {response.status_code}: {server_message(response)}"
                if response.status_code != 429 and response.status_code < 500:
                    raise EndpointError(f"{self.url} refused the request ({failure}){self._hint(response)}")
                wait = retry_after(response)
            if attempt < self.retries:
                sleep(min(MAX_WAIT, wait if wait is not None else self.backoff * 2**attempt))
        raise EndpointError(f"{self.url} failed after {self.retries + 1} tries; last: {failure}")

    def _hint(self, response) -> str:
        if response.status_code == 404 and not self.base_url.endswith("/v1"):
            return "; base_url is usually the address ending in /v1"
        return ""

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> EndpointModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def reply_text(response, url: str) -> str:
    """choices[0].message.content of a chat completion ("" when the model wrote no text)."""
    try:
        return response.json()["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        raise EndpointError(
            f"{url} answered 200 without a chat completion: {response.text[:300]!r}"
        ) from None
