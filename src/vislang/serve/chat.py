"""Chat completions: an OpenAI request into engine requests (one per choice), their answers back
into OpenAI's response, whole or as server-sent chunks."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from starlette.concurrency import run_in_threadpool

from ..errors import PromptTooLongError, VislangError
from ..generation import SamplingParams
from ..processing.tools import call_schema, parse_calls
from .common import APIError, ServerSettings, check_model, error_body
from .images import ImageInputError, read_image_url, read_video_url
from .schema import ChatRequest, ImagePart, VideoPart


@dataclass
class Started:
    """A chat request in the engine: a handle per choice, and how to read the answers."""

    handles: list
    messages: list[dict]
    tools: list[dict] | None
    constrained: bool  # a tool call was required: each answer is the JSON list of calls
    want_logprobs: bool


async def start_chat(body: ChatRequest, engine, settings: ServerSettings) -> Started:
    """Check the request, read its images, submit one engine request per choice (4xx on bad input)."""
    check_model(body.model, settings)
    n = body.n or 1
    if n > settings.max_n:
        raise APIError(400, f"n={n} is over this server's limit of {settings.max_n} choices")
    messages = await run_in_threadpool(to_messages, body, settings)
    params = sampling(body, settings)
    tools, call_required = tool_settings(body)
    if call_required is not None:
        if params.json_schema is not None or params.json_object:
            raise APIError(400, "a required tool call and response_format cannot be combined")
        params = replace(params, json_schema=call_required)
    handles = []
    try:
        for i in range(n):  # one request per choice; a seed gives each its own stream
            seed = None if params.seed is None else params.seed + i
            handles.append(
                await run_in_threadpool(engine.submit, messages, replace(params, seed=seed), tools)
            )
    except PromptTooLongError as e:
        for h in handles:
            h.cancel()
        raise APIError(400, context_message(e), code="context_length_exceeded") from None
    except (VislangError, ValueError) as e:
        for h in handles:
            h.cancel()
        raise APIError(400, str(e)) from None
    return Started(handles, messages, tools, call_required is not None, bool(body.logprobs))


async def finish_all(handles: list, request) -> list:
    """Every choice's Completion; a client that leaves cancels them (freeing their slots)."""
    done = []
    try:
        for handle in handles:
            async for _ in handle:
                if await request.is_disconnected():
                    handle.cancel()
            done.append(handle.result())
    finally:
        for handle in handles:
            handle.cancel()  # a no-op once finished
    return done


def read_answer(started: Started, done) -> tuple[str | None, list[dict], str]:
    """(text, tool calls, finish reason) of one choice."""
    if started.tools is not None:
        text, calls = parse_calls(done.text, constrained=started.constrained)
        if calls:
            return text or None, calls, "tool_calls"
    return done.text, [], finish_reason(done)


def chat_completion(cid: str, created: int, model_name: str, started: Started, done: list, tokenizer) -> dict:
    choices = []
    for i, d in enumerate(done):
        text, calls, finish = read_answer(started, d)
        message = {"role": "assistant", "content": text, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        logprobs = to_logprobs(d.logprobs, tokenizer) if started.want_logprobs else None
        choices.append({"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish})
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model_name,
        "choices": choices,
        "usage": total_usage(done),
    }


def to_messages(body: ChatRequest, settings: ServerSettings) -> list[dict]:
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
    return out


def sampling(body: ChatRequest, settings: ServerSettings) -> SamplingParams:
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
            **response_format(body),
        )
    except ValueError as e:
        raise APIError(400, str(e)) from None


def response_format(body: ChatRequest) -> dict:
    """response_format -> the engine's constraint: decoding follows the schema, so the answer parses."""
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return {}
    if fmt.type == "json_object":
        return {"json_object": True}
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise APIError(400, "response_format json_schema needs json_schema.schema")
    return {"json_schema": fmt.json_schema.schema_}


def tool_settings(body: ChatRequest) -> tuple[list[dict] | None, dict | None]:
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


def finish_reason(done) -> str:
    return "length" if done.finish_reason == "length" else "stop"


def context_message(e: PromptTooLongError) -> str:
    """OpenAI's wording, which clients (litellm) match to raise their context-window error."""
    if not e.context:
        return str(e)
    asked = e.prompt_tokens + e.completion_tokens
    return (
        f"This model's maximum context length is {e.context} tokens. However, you requested {asked} tokens "
        f"({e.prompt_tokens} in the messages, {e.completion_tokens} in the completion). "
        "Please reduce the length of the messages or completion."
    )


def total_usage(done: list) -> dict:
    prompt = done[0].usage["prompt_tokens"]
    completion = sum(d.usage["completion_tokens"] for d in done)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def logprob_entry(token_id: int, logprob: float, tokenizer) -> dict:
    text = tokenizer.decode([token_id], skip_special_tokens=False)
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def to_logprobs(entries: list[dict] | None, tokenizer) -> dict:
    """Engine entries -> OpenAI's choice.logprobs."""
    content = []
    for e in entries or []:
        item = logprob_entry(e["id"], e["logprob"], tokenizer)
        item["top_logprobs"] = [logprob_entry(i, lp, tokenizer) for i, lp in e["top"]]
        content.append(item)
    return {"content": content, "refusal": None}


@dataclass
class Stream:
    """What every chunk of one streamed response carries."""

    cid: str
    created: int
    model_name: str
    include_usage: bool


async def chat_sse(started: Started, spec: Stream, engine, retention):
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
            choice["logprobs"] = logprobs if started.want_logprobs else None
            chunk["choices"] = [choice]
        else:
            chunk["usage"] = usage
        return f"data: {json.dumps(chunk)}\n\n"

    def fresh_logprobs(handle, sent: int) -> tuple[dict | None, int]:
        if not started.want_logprobs:
            return None, sent
        entries = handle.token_logprobs[sent:]
        return to_logprobs(entries, engine.tokenizer), sent + len(entries)

    try:
        done = []
        for index, handle in enumerate(started.handles):
            sent = 0
            yield event({"role": "assistant", "content": ""}, index)
            if started.tools is not None:
                async for _ in handle:
                    pass
                result = handle.result()
                text, calls, finish = read_answer(started, result)
                logprobs, sent = fresh_logprobs(handle, sent)
                if text:
                    yield event({"content": text}, index, logprobs=logprobs)
                for k, call in enumerate(calls):
                    name = call["function"]["name"]
                    head = {**call, "index": k, "function": {"name": name, "arguments": ""}}
                    yield event({"tool_calls": [head]}, index)
                    args = {"index": k, "function": {"arguments": call["function"]["arguments"]}}
                    yield event({"tool_calls": [args]}, index)
                yield event({}, index, finish=finish)
                done.append(result)
                continue
            async for delta in handle:
                logprobs, sent = fresh_logprobs(handle, sent)
                yield event({"content": delta}, index, logprobs=logprobs)
            result = handle.result()
            logprobs, sent = fresh_logprobs(handle, sent)
            yield event({}, index, finish=finish_reason(result), logprobs=logprobs)
            done.append(result)
        if spec.include_usage:
            yield event({}, usage=total_usage(done))
        yield "data: [DONE]\n\n"
        if retention:
            await run_in_threadpool(retention.store, started.messages, done[0].text)
    except VislangError as e:
        yield f"data: {json.dumps(error_body(str(e), 'server_error'))}\n\n"
    finally:
        for handle in started.handles:
            handle.cancel()  # the client left mid-stream: free the slots
