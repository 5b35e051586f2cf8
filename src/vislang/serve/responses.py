"""OpenAI's Responses API (POST /v1/responses) on the same engine as chat completions.

A request is translated into a chat request (input items -> messages, instructions -> a system
message, input_image -> image_url, function_call / function_call_output items -> tool calls and tool
results, text.format -> response_format, flat tools -> chat tools) and answered as a Response object,
or streamed as OpenAI's typed events (response.created ... response.output_text.delta ...
response.completed). Conversation state on the server (previous_response_id) is not kept: send the
whole conversation as input.
"""

from __future__ import annotations

import json
import time
import uuid

from .chat import Started, read_answer
from .common import APIError


def to_chat_request(body: dict) -> dict:
    """A Responses request body -> the equivalent chat-completions body (validated after)."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    if body.get("previous_response_id"):
        raise APIError(400, "previous_response_id is not supported: send the whole conversation as input")
    messages = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise APIError(400, "input must be a string or a non-empty list of items")
    for item in items:
        if not isinstance(item, dict):
            raise APIError(400, "each input item must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role", "user"), "content": _content(item.get("content"))})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function"}
            call["function"] = {"name": item.get("name"), "arguments": item.get("arguments", "{}")}
            if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"].append(call)  # parallel calls: one assistant turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            output = output if isinstance(output, str) else json.dumps(output)
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": output})
        else:
            raise APIError(400, f"input items of type {kind!r} are not supported")
    chat = {"messages": messages, "model": body.get("model"), "stream": body.get("stream")}
    for key in ("temperature", "top_p", "parallel_tool_calls", "top_logprobs"):
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    fmt = _object(_object(body.get("text"), "text").get("format"), "text.format") or None
    if fmt and fmt.get("type") == "json_schema":
        schema = {"name": fmt.get("name"), "schema": fmt.get("schema"), "strict": fmt.get("strict")}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif fmt and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    if body.get("tools"):
        if not isinstance(body["tools"], list):
            raise APIError(400, "tools must be a list")
        chat["tools"] = [_chat_tool(_object(t, "each tool")) for t in body["tools"]]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        choice = {"type": "function", "function": {"name": choice.get("name")}}
    if choice is not None:
        chat["tool_choice"] = choice
    return chat


def _content(content) -> str | list:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise APIError(400, "a message's content must be a string or a list of parts")
    parts = []
    for part in content:
        kind = _object(part, "each content part").get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image":
            url = part.get("image_url")
            if not url:
                raise APIError(400, "input_image needs an image_url (file_id is not supported)")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        else:
            raise APIError(400, f"content parts of type {kind!r} are not supported")
    return parts


def _object(value, what: str) -> dict:
    """value if it is a JSON object ({} for null); a 400 naming `what` otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise APIError(400, f"{what} must be an object")
    return value


def _chat_tool(tool: dict) -> dict:
    if tool.get("type") != "function":
        raise APIError(400, f"tools of type {tool.get('type')!r} are not supported; use function tools")
    function = {
        k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None
    }
    return {"type": "function", "function": function}


def output_items(started: Started, done) -> list[dict]:
    """The Response's output: a message with its text, or one function_call item per call."""
    text, calls, _ = read_answer(started, done)
    items = []
    if text:
        items.append(_message(text))
    for call in calls:
        items.append(
            {
                "type": "function_call",
                "id": "fc_" + uuid.uuid4().hex[:24],
                "call_id": call["id"],
                "name": call["function"]["name"],
                "arguments": call["function"]["arguments"],
                "status": "completed",
            }
        )
    return items


def _message(text: str, status: str = "completed") -> dict:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {
        "type": "message",
        "id": "msg_" + uuid.uuid4().hex[:24],
        "status": status,
        "role": "assistant",
        "content": [part],
    }


def response_object(rid: str, body: dict, model_name: str, output: list, done=None) -> dict:
    """A Response; `done` None is one still in progress (the first streamed events)."""
    incomplete = done is not None and done.finish_reason == "length"
    usage = None
    if done is not None:
        u = done.usage
        usage = {
            "input_tokens": u["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": done.cached.get("prefix_tokens", 0)},
            "output_tokens": u["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u["total_tokens"],
        }
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress" if done is None else ("incomplete" if incomplete else "completed"),
        "model": model_name,
        "output": output,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "tools": body.get("tools") or [],
        "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "text": body.get("text") or {"format": {"type": "text"}},
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "error": None,
        "metadata": body.get("metadata") or {},
        "usage": usage,
    }


async def response_events(started: Started, rid: str, body: dict, model_name: str):
    """Server-sent events of one streamed response, in OpenAI's names and order."""
    seq = iter(range(1 << 30))

    def event(kind: str, **data) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': next(seq), **data})}\n\n"

    handle = started.handles[0]
    try:
        yield event("response.created", response=response_object(rid, body, model_name, []))
        yield event("response.in_progress", response=response_object(rid, body, model_name, []))
        if started.tools is None:  # text streams as it comes
            item = _message("", status="in_progress")
            item["content"] = []
            ids = {"item_id": item["id"], "output_index": 0}
            yield event("response.output_item.added", output_index=0, item=item)
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            yield event("response.content_part.added", **ids, content_index=0, part=part)
            text = ""
            async for delta in handle:
                text += delta
                yield event("response.output_text.delta", **ids, content_index=0, delta=delta, logprobs=[])
            done = handle.result()
            yield event("response.output_text.done", **ids, content_index=0, text=text, logprobs=[])
            yield event("response.content_part.done", **ids, content_index=0, part={**part, "text": text})
            item = {**_message(text), "id": item["id"]}
            yield event("response.output_item.done", output_index=0, item=item)
            output = [item]
        else:  # text or function calls: read whole, then sent item by item
            async for _ in handle:
                pass
            done = handle.result()
            output = output_items(started, done)
            for i, item in enumerate(output):
                yield event(
                    "response.output_item.added", output_index=i, item={**item, "status": "in_progress"}
                )
                if item["type"] == "function_call":
                    args = item["arguments"]
                    yield event(
                        "response.function_call_arguments.delta",
                        item_id=item["id"],
                        output_index=i,
                        delta=args,
                    )
                    yield event(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=i,
                        arguments=args,
                    )
                yield event("response.output_item.done", output_index=i, item=item)
        final = response_object(rid, body, model_name, output, done)
        yield event(
            "response.completed" if final["status"] == "completed" else "response.incomplete", response=final
        )
    finally:
        handle.cancel()
