"""The OpenAI-compatible app: chat completions and responses (streamed or not), models, health,
embeddings.

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
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ..errors import VislangError
from ..generation.engine import Engine
from .chat import Stream, chat_completion, chat_sse, finish_all, start_chat
from .common import APIError, ServerSettings, check_model, describe, error_body
from .images import ImageInputError, read_image_url
from .openapi import openapi_schema
from .responses import output_items, response_events, response_object, to_chat_request
from .retention import Retention
from .schema import ChatRequest, EmbeddingRequest

log = logging.getLogger("vislang.serve")
WEB = Path(__file__).resolve().parent / "web"


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
        if engine is None:
            return {"status": "ok", "busy_slots": 0}
        cache = engine.cache
        kv = {"kv_cache_bytes": cache.nbytes(), "kv_cache_peak_bytes": cache.peak_bytes}
        kv["kv_budget_bytes"] = engine.kv_budget_bytes
        return {"status": "ok", "busy_slots": engine.busy_slots, **kv}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_card(model, settings)]}

    @app.get("/v1/models/{model_id:path}")
    async def one_model(model_id: str):
        check_model(model_id, settings)
        return _card(model, settings)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi():
        if app.openapi_schema is None:
            from .. import __version__

            app.openapi_schema = openapi_schema(app, __version__)
        return app.openapi_schema

    @app.get("/")
    async def page():
        return FileResponse(WEB / "index.html", media_type="text/html")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        try:
            body = EmbeddingRequest.model_validate(await _read_json(request, settings.max_body_bytes))
        except ValidationError as e:
            raise APIError(400, "invalid request: " + describe(e)) from None
        if not can_embed:
            raise APIError(
                400, f"model {settings.model_name} cannot embed: it is a generative VLM, not a dual encoder"
            )
        check_model(body.model, settings)
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
            raise APIError(400, "invalid request: " + describe(e)) from None
        started = await start_chat(body, engine, settings)
        cid, created = f"chatcmpl-{request.state.rid}", int(time.time())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            spec = Stream(cid, created, settings.model_name, include_usage)
            stream = chat_sse(started, spec, engine, retention)
            headers = {"Cache-Control": "no-cache"}
            return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
        done = await finish_all(started.handles, request)
        if retention:
            await run_in_threadpool(retention.store, started.messages, done[0].text)
        return chat_completion(cid, created, settings.model_name, started, done, engine.tokenizer)

    @app.post("/v1/responses")
    async def responses(request: Request):
        if not can_chat:
            raise APIError(400, f"model {settings.model_name} cannot answer: it is a dual encoder")
        raw = await _read_json(request, settings.max_body_bytes)
        try:
            body = ChatRequest.model_validate(to_chat_request(raw))
        except ValidationError as e:
            raise APIError(400, "invalid request: " + describe(e)) from None
        started = await start_chat(body, engine, settings)
        rid = f"resp_{request.state.rid}"
        if body.stream:
            events = response_events(started, rid, raw, settings.model_name)
            headers = {"Cache-Control": "no-cache"}
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        (done,) = await finish_all(started.handles, request)
        if retention:
            await run_in_threadpool(retention.store, started.messages, done.text)
        return response_object(rid, raw, settings.model_name, output_items(started, done), done)

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
