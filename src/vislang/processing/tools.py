"""Function calling: tools into the prompt, tool calls out of the answer.

A checkpoint whose chat template renders `tools` gets them as transformers passes them (assistant
tool calls with their arguments as objects, `tool` messages as they are). A template that knows no
tools (SmolLM2's) gets the documented fallback, the Hermes / Qwen2.5 convention most small models
have seen: a system message listing the functions as JSON and asking for
<tool_call>{"name": ..., "arguments": {...}}</tool_call>, earlier calls written back that way in the
assistant turn, and each tool result as <tool_response>...</tool_response> in a user turn.

When a call is required (tool_choice "required" or a named function), decoding is constrained to
`call_schema`: a JSON list of calls whose names and arguments follow the tools' schemas, so the
arguments always validate.
"""

from __future__ import annotations

import json
import re
import uuid

TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)

FALLBACK_INSTRUCTIONS = (
    "You may call one or more functions to answer. The functions, as JSON schemas:\n{tools}\n"
    'To call a function, answer with <tool_call>{{"name": <function name>, "arguments": <arguments '
    "object>}}</tool_call>, one block per call."
)


def template_knows_tools(template: str | None) -> bool:
    return bool(template) and "tools" in template


def functions(tools: list[dict]) -> list[dict]:
    return [t["function"] for t in tools if t.get("type", "function") == "function"]


def conversation_with_tools(messages: list[dict], tools: list[dict] | None, template: str | None):
    """(messages, tools for the template): ready for render_chat."""
    if not tools and not any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        return messages, None
    if template_knows_tools(template):
        out = []
        for m in messages:
            m = dict(m)
            if m.get("tool_calls"):  # templates write the arguments themselves: give them objects
                m["tool_calls"] = [_as_object(c) for c in m["tool_calls"]]
            out.append(m)
        return out, tools
    out = []
    for m in messages:
        if m["role"] == "tool":
            content = f"<tool_response>\n{_text(m.get('content'))}\n</tool_response>"
            out.append({"role": "user", "content": content})
        elif m.get("tool_calls"):
            calls = "\n".join(
                f"<tool_call>{json.dumps(_as_object(c)['function'])}</tool_call>" for c in m["tool_calls"]
            )
            text = _text(m.get("content"))
            out.append({"role": "assistant", "content": (text + "\n" if text else "") + calls})
        else:
            out.append(m)
    if tools:
        listed = "\n".join(json.dumps(f) for f in functions(tools))
        instructions = FALLBACK_INSTRUCTIONS.format(tools=listed)
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": _text(out[0].get("content")) + "\n\n" + instructions}
        else:
            out.insert(0, {"role": "system", "content": instructions})
    return out, None


def call_schema(tools: list[dict], name: str | None = None, parallel: bool = True) -> dict:
    """JSON schema of the answer when a call is required: a list of {"name", "arguments"} (one item
    unless `parallel`), limited to the function `name` when one is named."""
    options = []
    for f in functions(tools):
        if name is not None and f["name"] != name:
            continue
        params = f.get("parameters") or {"type": "object", "properties": {}}
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": f["name"]}, "arguments": params},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    if not options:
        raise ValueError(f"tool_choice names {name!r}, which is not among the tools")
    items = options[0] if len(options) == 1 else {"anyOf": options}
    return {"type": "array", "items": items, "minItems": 1, **({} if parallel else {"maxItems": 1})}


def parse_calls(text: str, constrained: bool) -> tuple[str, list[dict]]:
    """(the text left, OpenAI tool_calls) from an answer: the JSON list a constrained answer is, or
    the <tool_call> blocks a free one may hold."""
    if constrained:
        try:
            found = json.loads(text)
        except json.JSONDecodeError:  # cut short by max_tokens: no call
            return text, []
        return "", [_openai_call(c) for c in found]
    calls = []
    for block in TOOL_CALL.findall(text):
        try:
            call = json.loads(block)
        except json.JSONDecodeError:
            continue
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            calls.append(_openai_call(call))
    return (TOOL_CALL.sub("", text).strip() if calls else text), calls


def _openai_call(call: dict) -> dict:
    arguments = call.get("arguments", {})
    return {
        "id": "call_" + uuid.uuid4().hex[:24],
        "type": "function",
        "function": {"name": call["name"], "arguments": json.dumps(arguments)},
    }


def _as_object(call: dict) -> dict:
    """An OpenAI tool call with its arguments parsed from their JSON string."""
    function = dict(call.get("function", call))
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            arguments = {"raw": arguments}
    function["arguments"] = arguments
    return {**call, "type": "function", "function": function}


def _text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
