"""Function calling in the prompt and in the answer (processing/tools.py), without a model."""

import json

import pytest

from vislang.processing import render_chat
from vislang.processing.tools import call_schema, conversation_with_tools, parse_calls

TOOL = {
    "type": "function",
    "function": {"name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}},
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2}'}}
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# a template that renders tools itself, as Qwen2.5's does (reduced to what matters here)
WITH_TOOLS = (
    "{% if tools %}TOOLS:{% for t in tools %}{{ t['function']['name'] }};{% endfor %}\n{% endif %}"
    "{% for m in messages %}{{ m['role'] }}:{{ m['content'] }}"
    "{% for c in m.get('tool_calls', []) %}"
    "[call {{ c['function']['name'] }} {{ c['function']['arguments']['a'] }}]"
    "{% endfor %}\n{% endfor %}"
)


def conversation():
    return [
        {"role": "user", "content": "add two"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "4"},
    ]


def test_fallback_for_a_template_without_tools():
    messages, tools = conversation_with_tools(conversation(), [TOOL], CHATML)
    assert tools is None
    text = render_chat(CHATML, messages, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou may call one or more functions")
    assert json.dumps(TOOL["function"]) in text
    assert '<tool_call>{"name": "add", "arguments": {"a": 2}}</tool_call>' in text
    assert "<|im_start|>user\n<tool_response>\n4\n</tool_response>" in text


def test_a_template_with_tools_gets_them_and_argument_objects():
    messages, tools = conversation_with_tools(conversation(), [TOOL], WITH_TOOLS)
    text = render_chat(WITH_TOOLS, messages, add_generation_prompt=False, tools=tools)
    assert text.startswith("TOOLS:add;") and "[call add 2]" in text and "tool:4" in text


def test_call_schema_and_parsing():
    schema = call_schema([TOOL], parallel=False)
    assert schema["maxItems"] == 1 and schema["items"]["properties"]["name"] == {"const": "add"}
    with pytest.raises(ValueError, match="not among the tools"):
        call_schema([TOOL], name="sub")
    text, calls = parse_calls('[{"name": "add", "arguments": {"a": 1}}]', constrained=True)
    assert text == "" and calls[0]["function"] == {"name": "add", "arguments": '{"a": 1}'}
    text, calls = parse_calls(
        'Sure. <tool_call>{"name": "add", "arguments": {"a": 5}}</tool_call>', constrained=False
    )
    assert text == "Sure." and json.loads(calls[0]["function"]["arguments"]) == {"a": 5}
    assert parse_calls("no call here", constrained=False) == ("no call here", [])
