"""The OpenAI-compatible app: chat completions (streamed or not), models, health, embeddings.

Every refusal is a 4xx in OpenAI's error shape with a reason, and the process stays up. Nothing of
a request's content (image bytes, prompt, answer) is logged or written anywhere unless retention
is switched on: logs carry the request id, sizes, durations and the status.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ..errors import PromptTooLongError, VislangError
from ..generation import SamplingParams
from ..generation.engine import Engine
from ..processing.tools import call_schema, parse_calls
from .images import FetchPolicy, ImageInputError, read_image_url, read_video_url
from .retention import Retention
from .schema import ChatRequest, EmbeddingRequest, ImagePart, VideoPart

log = logging.getLogger("vislang.serve")
WEB = Path(__file__).resolve().parent / "web"


@dataclass
class ServerSettings:
    model_name: str = "vislang-default"
    api_key: str | None = None
    max_body_bytes: int = 20 << 20
    max_images: int = 8
    max_batch: int = 8  # sequences decoded together by the engine
    max_len: int | None = None  # tokens per sequence, prompt and answer; None: the model's context
    kv_budget_bytes: int | None = 4 << 30  # the KV cache grows with use up to this
    max_tokens: int | None = None  # when a request names none; None: until the context ends
    max_n: int = 4  # choices one request may ask for
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    cors_origins: list[str] = field(default_factory=list)
    retain_dir: Path | None = None
    retain_days: float = 7.0


class APIError(Exception):
    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def create_app(model, settings: ServerSettings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    can_chat, can_embed = hasattr(model, "language_model"), hasattr(model, "get_text_features")
    if engine is None and can_chat:
        engine = Engine(
            model,
            max_batch=settings.max_batch,
            max_len=settings.max_len,
            max_images=settings.max_images,
            kv_budget_bytes=settings.kv_budget_bytes,
        )
    retention = Retention(settings.retain_dir, settings.retain_days) if settings.retain_dir else None
    app = FastAPI(title="vislang", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.settings = engine, settings

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return JSONResponse(error_body(exc.message, exc.kind, exc.code), status_code=exc.status)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        # the exception's type only: its message could quote the request
        log.error("request %s failed: %s", getattr(request.state, "rid", "-"), type(exc).__name__)
        return JSONResponse(error_body("internal error", "server_error"), status_code=500)

    @app.exception_handler(404)
    async def _not_found(request: Request, exc):
        return JSONResponse(error_body(f"no route {request.url.path}", code="not_found"), status_code=404)

    @app.exception_handler(405)
    async def _bad_method(request: Request, exc):
        return JSONResponse(error_body(f"{request.method} is not allowed here"), status_code=405)

    @app.middleware("http")
    async def _guard_and_log(request: Request, call_next):
        rid = uuid.uuid4().hex[:16]
        start = time.perf_counter()
        request.state.rid = rid
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
            response = JSONResponse(
                error_body(
                    f"request body over the {settings.max_body_bytes}-byte limit", code="body_too_large"
                ),
                status_code=413,
            )
        elif request.url.path.startswith("/v1/") and not _authorized(request, settings.api_key):
            response = JSONResponse(
                error_body("missing or wrong API key (Authorization: Bearer ...)", "authentication_error"),
                status_code=401,
            )
        else:
            response = await call_next(request)
        response.headers["x-request-id"] = rid
        log.info(
            "request %s %s %s status=%d body_bytes=%s ms=%.0f",
            rid,
            request.method,
            request.url.path,
            response.status_code,
            length or "-",
            1e3 * (time.perf_counter() - start),
        )
        return response

    @app.get("/health")
    async def health():
        return {"status": "ok", "busy_slots": engine.busy_slots if engine else 0}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_card(model, settings)]}

    @app.get("/v1/models/{model_id:path}")
    async def one_model(model_id: str):
        _check_model(model_id, settings)
        return _card(model, settings)

    @app.get("/")
    async def page():
        return FileResponse(WEB / "index.html", media_type="text/html")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        try:
            body = EmbeddingRequest.model_validate(await _read_json(request, settings.max_body_bytes))
        except ValidationError as e:
            raise APIError(400, "invalid request: " + _describe(e)) from None
        if not can_embed:
            raise APIError(
                400, f"model {settings.model_name} cannot embed: it is a generative VLM, not a dual encoder"
            )
        _check_model(body.model, settings)
        inputs = [body.input] if isinstance(body.input, str) else body.input
        vectors = await run_in_threadpool(_embed, model, inputs, settings)
        if body.encoding_format == "base64":  # the SDK's default: little-endian float32 bytes
            vectors = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() for v in vectors]
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        return {
            "object": "list",
            "data": data,
            "model": settings.model_name,
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        if not can_chat:
            raise APIError(
                400, f"model {settings.model_name} cannot chat: it is a dual encoder (use /v1/embeddings)"
            )
        raw = await _read_json(request, settings.max_body_bytes)
        try:
            body = ChatRequest.model_validate(raw)
        except ValidationError as e:
            raise APIError(400, "invalid request: " + _describe(e)) from None
        _check_model(body.model, settings)
        n = body.n or 1
        if n > settings.max_n:
            raise APIError(400, f"n={n} is over this server's limit of {settings.max_n} choices")
        messages, n_images = await run_in_threadpool(_to_messages, body, settings)
        params = _sampling(body, settings)
        tools, call_required = _tools(body)
        if call_required is not None:
            if params.json_schema is not None or params.json_object:
                raise APIError(400, "a required tool call and response_format cannot be combined")
            params = replace(params, json_schema=call_required)
        handles = []
        try:
            for i in range(n):  # one request per choice; a seed gives each its own stream
                seed = None if params.seed is None else params.seed + i
                choice = replace(params, seed=seed)
                handles.append(await run_in_threadpool(engine.submit, messages, choice, tools))
        except PromptTooLongError as e:
            for h in handles:
                h.cancel()
            raise APIError(400, _context_message(e), code="context_length_exceeded") from None
        except (VislangError, ValueError) as e:
            for h in handles:
                h.cancel()
            raise APIError(400, str(e)) from None
        cid, created = f"chatcmpl-{request.state.rid}", int(time.time())
        want_logprobs = bool(body.logprobs)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            spec = _Stream(cid, created, settings.model_name, include_usage, want_logprobs)
            spec.with_tools, spec.constrained = tools is not None, call_required is not None
            stream = _sse(handles, spec, engine, retention, messages)
            return StreamingResponse(
                stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        done = []
        try:
            for handle in handles:
                async for _ in handle:
                    if await request.is_disconnected():
                        handle.cancel()
                done.append(handle.result())
        finally:
            for handle in handles:
                handle.cancel()  # a no-op once finished; frees the slot if the client went away
        if retention:
            await run_in_threadpool(retention.store, messages, done[0].text)
        choices = []
        for i, d in enumerate(done):
            message, finish = {"role": "assistant", "content": d.text, "refusal": None}, _finish(d)
            if tools is not None:
                text, calls = parse_calls(d.text, constrained=call_required is not None)
                if calls:
                    message.update(content=text or None, tool_calls=calls)
                    finish = "tool_calls"
            logprobs = _logprobs(d.logprobs, engine.tokenizer) if want_logprobs else None
            choices.append({"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish})
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": settings.model_name,
            "choices": choices,
            "usage": _usage(done),
        }

    if retention:

        @app.on_event("startup")
        async def _purge_periodically():
            async def loop():
                while True:
                    await run_in_threadpool(retention.purge)
                    await asyncio.sleep(3600)

            app.state.purger = asyncio.create_task(loop())

    @app.on_event("shutdown")
    async def _stop_engine():
        if engine:
            engine.shutdown()

    return app


def _card(model, settings: ServerSettings) -> dict:
    card = {"id": settings.model_name, "object": "model", "created": 0, "owned_by": "vislang"}
    card["vislang"] = _box_convention(model)  # read by the web page to draw boxes
    return card


def _box_convention(model) -> dict:
    """How the model writes boxes: on a 0..1000 grid, or (Qwen2.5-VL) in pixels of the image after
    smart_resize, whose settings the page needs to scale them back."""
    family = getattr(getattr(model, "cfg", None), "model_type", "")
    transform = getattr(model, "image_transform", None)
    if family == "qwen2_5_vl" and transform is not None:
        return {
            "boxes": "resized_pixels",
            "factor": transform.factor,
            "min_pixels": transform.min_pixels,
            "max_pixels": transform.max_pixels,
        }
    return {"boxes": "grid1000"}


def _authorized(request: Request, key: str | None) -> bool:
    if not key:
        return True
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


async def _read_json(request: Request, limit: int):
    """The body, counted as it arrives (a chunked body has no Content-Length), then parsed."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body over the {limit}-byte limit", code="body_too_large")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"request body is not valid JSON: {e}") from None


def _embed(model, inputs: list[str], settings: ServerSettings) -> list[list[float]]:
    """Texts, and images sent as data URLs, into the dual encoder's shared space, in input order."""
    vectors = []
    for item in inputs:
        if item.startswith("data:image/"):
            try:
                image = read_image_url(item, settings.fetch)
                vectors.append(model.embed(images=[image])["image_embeds"][0].tolist())
            except (ImageInputError, VislangError) as e:
                raise APIError(400, str(e), code="invalid_image") from None
        else:
            vectors.append(model.embed(texts=[item])["text_embeds"][0].tolist())
    return vectors


def _describe(error: ValidationError) -> str:
    parts = []
    for e in error.errors()[:5]:
        where = ".".join(str(x) for x in e["loc"])
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def _to_messages(body: ChatRequest, settings: ServerSettings) -> tuple[list[dict], int]:
    """OpenAI messages -> vislang messages, with each image_url and video_url read into bytes (never
    to disk); mm_processor_kwargs go to every image and video part."""
    images = sum(
        isinstance(p, (ImagePart, VideoPart))
        for m in body.messages
        if isinstance(m.content, list)
        for p in m.content
    )
    if images > settings.max_images:
        raise APIError(
            400,
            f"{images} images and videos in one request; at most {settings.max_images} allowed",
            code="too_many_images",
        )
    options = body.mm_processor_kwargs.model_dump(exclude_none=True) if body.mm_processor_kwargs else {}
    out = []
    for m in body.messages:
        role = "system" if m.role == "developer" else m.role
        extra = {"tool_calls": m.tool_calls} if m.tool_calls else {}
        if m.role == "tool":
            extra = {"tool_call_id": m.tool_call_id, **({"name": m.name} if m.name else {})}
        if not isinstance(m.content, list):
            out.append({"role": role, "content": m.content or "", **extra})
            continue
        parts = []
        for p in m.content:
            if isinstance(p, ImagePart):
                try:
                    parts.append({"type": "image", "image": read_image_url(p.url, settings.fetch), **options})
                except ImageInputError as e:
                    raise APIError(400, str(e), code="invalid_image") from None
            elif isinstance(p, VideoPart):
                try:
                    parts.append({"type": "video", "video": read_video_url(p.url, settings.fetch), **options})
                except ImageInputError as e:
                    raise APIError(400, str(e), code="invalid_video") from None
            else:
                parts.append({"type": "text", "text": p.text})
        out.append({"role": role, "content": parts, **extra})
    return out, images


def _sampling(body: ChatRequest, settings: ServerSettings) -> SamplingParams:
    # top_p 0 keeps only the likeliest token: greedy, as lmms-eval's task configs mean it
    sample = bool(body.temperature) and body.top_p != 0
    top_logprobs = body.top_logprobs or 0
    if body.top_logprobs and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs: true")
    try:
        return SamplingParams(
            # omitted: until the context ends (or the server's --max-tokens cap, when it has one)
            max_new_tokens=body.max_completion_tokens or body.max_tokens or settings.max_tokens,
            do_sample=sample,
            temperature=body.temperature if sample else 1.0,
            top_p=body.top_p if body.top_p else 1.0,
            seed=body.seed,
            stop=[body.stop] if isinstance(body.stop, str) else list(body.stop or []),
            repetition_penalty=body.repetition_penalty or 1.0,
            logprobs=top_logprobs if body.logprobs else None,
            **_response_format(body),
        )
    except ValueError as e:
        raise APIError(400, str(e)) from None


def _response_format(body: ChatRequest) -> dict:
    """response_format -> the engine's constraint: decoding follows the schema, so the answer parses."""
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return {}
    if fmt.type == "json_object":
        return {"json_object": True}
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise APIError(400, "response_format json_schema needs json_schema.schema")
    return {"json_schema": fmt.json_schema.schema_}


def _tools(body: ChatRequest) -> tuple[list[dict] | None, dict | None]:
    """(the tools the prompt offers, the JSON schema decoding must follow when a call is required)."""
    choice = body.tool_choice
    if not body.tools or choice == "none":
        if isinstance(choice, dict) or choice == "required":
            raise APIError(400, f"tool_choice {choice!r} needs tools")
        return None, None
    tools = [t.model_dump(exclude_none=True) for t in body.tools]
    name = None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if choice.get("type") != "function" or not name:
            raise APIError(400, 'tool_choice must be "none", "auto", "required" or {"type": "function", ...}')
    if choice is None or choice == "auto":
        return tools, None
    try:
        return tools, call_schema(tools, name, parallel=body.parallel_tool_calls is not False)
    except ValueError as e:
        raise APIError(400, str(e)) from None


def _finish(done) -> str:
    return "length" if done.finish_reason == "length" else "stop"


def _check_model(name: str | None, settings: ServerSettings) -> None:
    """A request may leave the model out; a name that is not the served one is OpenAI's 404."""
    if name and name != settings.model_name:
        raise APIError(
            404,
            f"The model `{name}` does not exist or you do not have access to it. "
            f"This server serves `{settings.model_name}`.",
            code="model_not_found",
        )


def _context_message(e: PromptTooLongError) -> str:
    """OpenAI's wording, which clients (litellm) match to raise their context-window error."""
    if not e.context:
        return str(e)
    asked = e.prompt_tokens + e.completion_tokens
    return (
        f"This model's maximum context length is {e.context} tokens. However, you requested {asked} tokens "
        f"({e.prompt_tokens} in the messages, {e.completion_tokens} in the completion). "
        "Please reduce the length of the messages or completion."
    )


def _usage(done: list) -> dict:
    prompt = done[0].usage["prompt_tokens"]
    completion = sum(d.usage["completion_tokens"] for d in done)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _logprob_entry(token_id: int, logprob: float, tokenizer) -> dict:
    text = tokenizer.decode([token_id], skip_special_tokens=False)
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def _logprobs(entries: list[dict] | None, tokenizer) -> dict:
    """Engine entries -> OpenAI's choice.logprobs."""
    content = []
    for e in entries or []:
        item = _logprob_entry(e["id"], e["logprob"], tokenizer)
        item["top_logprobs"] = [_logprob_entry(i, lp, tokenizer) for i, lp in e["top"]]
        content.append(item)
    return {"content": content, "refusal": None}


@dataclass
class _Stream:
    """What every chunk of one streamed response carries, and how its answers are read."""

    cid: str
    created: int
    model_name: str
    include_usage: bool
    want_logprobs: bool
    with_tools: bool = False  # tools offered: an answer is text or tool calls, read whole
    constrained: bool = False  # a call was required: the answer is the JSON list of calls


async def _sse(handles, spec: _Stream, engine, retention, messages):
    """Server-sent chunks, one choice after the other (each chunk names its choice's index). With tools
    offered, an answer is read whole first: it is either text or tool calls, sent as OpenAI sends them
    (a first delta with the call's id and name, then its arguments)."""

    def event(delta: dict, index: int = 0, finish=None, usage=None, logprobs=None) -> str:
        chunk = {
            "id": spec.cid,
            "object": "chat.completion.chunk",
            "created": spec.created,
            "model": spec.model_name,
            "choices": [],
        }
        if usage is None:
            choice = {"index": index, "delta": delta, "finish_reason": finish}
            choice["logprobs"] = logprobs if spec.want_logprobs else None
            chunk["choices"] = [choice]
        else:
            chunk["usage"] = usage
        return f"data: {json.dumps(chunk)}\n\n"

    def fresh_logprobs(handle, sent: int) -> tuple[dict | None, int]:
        if not spec.want_logprobs:
            return None, sent
        entries = handle.token_logprobs[sent:]
        return _logprobs(entries, engine.tokenizer), sent + len(entries)

    try:
        done = []
        for index, handle in enumerate(handles):
            sent = 0
            yield event({"role": "assistant", "content": ""}, index)
            if spec.with_tools:
                async for _ in handle:
                    pass
                result = handle.result()
                text, calls = parse_calls(result.text, spec.constrained)
                logprobs, sent = fresh_logprobs(handle, sent)
                if text:
                    yield event({"content": text}, index, logprobs=logprobs)
                for k, call in enumerate(calls):
                    head = {
                        **call,
                        "index": k,
                        "function": {"name": call["function"]["name"], "arguments": ""},
                    }
                    yield event({"tool_calls": [head]}, index)
                    args = {"index": k, "function": {"arguments": call["function"]["arguments"]}}
                    yield event({"tool_calls": [args]}, index)
                yield event({}, index, finish="tool_calls" if calls else _finish(result))
                done.append(result)
                continue
            async for delta in handle:
                logprobs, sent = fresh_logprobs(handle, sent)
                yield event({"content": delta}, index, logprobs=logprobs)
            result = handle.result()
            logprobs, sent = fresh_logprobs(handle, sent)
            yield event({}, index, finish=_finish(result), logprobs=logprobs)
            done.append(result)
        if spec.include_usage:
            yield event({}, usage=_usage(done))
        yield "data: [DONE]\n\n"
        if retention:
            await run_in_threadpool(retention.store, messages, done[0].text)
    except VislangError as e:
        yield f"data: {json.dumps(error_body(str(e), 'server_error'))}\n\n"
    finally:
        for handle in handles:
            handle.cancel()  # the client left mid-stream: free the slots
