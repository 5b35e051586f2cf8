"""`vislang serve` with the default model (a real tokenizer and chat template) through the official
client: structured output (decoding follows the schema, so the answer always parses, `parse()` too),
tool calls round trips, a 6000-token conversation, and the Responses API."""

import json
from typing import Literal

import openai
import pytest
from pydantic import BaseModel, Field

from test_serve import KEY, start_server


class Verdict(BaseModel):
    color: Literal["red", "green", "blue"]
    count: int = Field(ge=0, le=9)
    sure: bool


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    work = tmp_path_factory.mktemp("default_serve_work")
    proc, base = start_server("default", work, "--weights", "int8", "--api-key", KEY)
    yield openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=120)
    proc.terminate()
    proc.wait(10)


def ask(text):
    return [{"role": "user", "content": text}]


def test_json_schema_parses_into_a_pydantic_model(client):
    done = client.chat.completions.parse(
        model="vislang-default",
        messages=ask("Pick a color, a count and whether you are sure."),
        response_format=Verdict,
        max_tokens=60,
    )
    verdict = done.choices[0].message.parsed
    assert isinstance(verdict, Verdict)
    assert Verdict.model_validate_json(done.choices[0].message.content) == verdict


def test_json_schema_streamed(client):
    schema = {
        "type": "object",
        "properties": {
            "answer": {"enum": ["yes", "no"]},
            "reasons": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
        },
        "required": ["answer", "reasons"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}}
    stream = client.chat.completions.create(
        model="vislang-default",
        messages=ask("Is the sky blue?"),
        response_format=fmt,
        max_tokens=60,
        stream=True,
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    reply = json.loads(text)
    assert reply["answer"] in ("yes", "no") and set(reply["reasons"]) <= {"a", "b"}


def test_json_object(client):
    done = client.chat.completions.create(
        model="vislang-default",
        messages=ask('Reply with a JSON object with one key, "answer", whose value is "yes".'),
        response_format={"type": "json_object"},
        max_tokens=100,
    )
    assert done.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(done.choices[0].message.content), dict)


def test_a_schema_that_cannot_be_compiled_is_a_400(client):
    bad = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}},
    }
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="vislang-default", messages=ask("hi"), response_format=bad, max_tokens=5
        )
    assert "schema" in str(err.value)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@pytest.mark.parametrize(
    "choice,names",
    [
        ("required", {"get_weather", "get_time"}),
        ({"type": "function", "function": {"name": "get_time"}}, {"get_time"}),
    ],
    ids=["required", "named"],
)
def test_tool_call_round_trip(client, choice, names):
    """call (arguments valid against the schema), the tool's result, then a final answer in text."""
    messages = ask("What is the weather in Paris?")
    first = client.chat.completions.create(
        model="vislang-default", messages=messages, tools=[WEATHER, TIME], tool_choice=choice, max_tokens=80
    )
    out = first.choices[0]
    assert out.finish_reason == "tool_calls" and out.message.tool_calls
    for call in out.message.tool_calls:
        assert call.id.startswith("call_") and call.function.name in names
        arguments = json.loads(call.function.arguments)
        assert isinstance(arguments["city"], str) and len(arguments["city"]) <= 20
        if call.function.name == "get_weather":
            assert arguments["unit"] in ("celsius", "fahrenheit")
    messages = messages + [out.message.model_dump(exclude_none=True)]
    for call in out.message.tool_calls:
        messages.append(
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21, "sky": "clear"}'}
        )
    final = client.chat.completions.create(
        model="vislang-default", messages=messages, tools=[WEATHER, TIME], tool_choice="none", max_tokens=30
    )
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls


def test_tool_calls_streamed(client):
    stream = client.chat.completions.create(
        model="vislang-default",
        messages=ask("What time is it in Tokyo?"),
        tools=[TIME],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=60,
        stream=True,
    )
    calls, finish = {}, None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"name": "", "arguments": ""})
                entry["name"] += delta.function.name or ""
                entry["arguments"] += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls" and len(calls) == 1
    assert calls[0]["name"] == "get_time" and "city" in json.loads(calls[0]["arguments"])


def test_tool_choice_errors(client):
    with pytest.raises(openai.BadRequestError, match="not among the tools"):
        client.chat.completions.create(
            model="vislang-default",
            messages=ask("hi"),
            tools=[TIME],
            tool_choice={"type": "function", "function": {"name": "launch"}},
            max_tokens=5,
        )


def test_a_6000_token_conversation(client):
    """The context is the model's own (SmolLM2: 8192 tokens), the KV cache grown to fit."""
    turns = []
    for i in range(30):
        turns.append(
            {
                "role": "user",
                "content": f"Fact {i}: " + " ".join(f"the number {i} is kept in box {j}." for j in range(17)),
            }
        )
        turns.append({"role": "assistant", "content": f"Noted fact {i}."})
    turns.append({"role": "user", "content": "What was fact 3 about? Answer briefly."})
    out = client.chat.completions.create(model="vislang-default", messages=turns, max_tokens=12)
    assert 6000 <= out.usage.prompt_tokens <= 8192 - 12
    assert out.choices[0].message.content


def scene_url():
    import base64
    from pathlib import Path

    scene = Path(__file__).resolve().parent.parent / "src" / "vislang" / "assets" / "demo" / "scene.png"
    return "data:image/png;base64," + base64.b64encode(scene.read_bytes()).decode()


def test_responses_api_with_an_image(client):
    content = [
        {"type": "input_text", "text": "How many objects are there?"},
        {"type": "input_image", "image_url": scene_url()},
    ]
    out = client.responses.create(
        model="vislang-default",
        instructions="Answer briefly.",
        input=[{"role": "user", "content": content}],
        max_output_tokens=16,
    )
    assert out.object == "response" and out.status in ("completed", "incomplete")
    assert out.output_text.strip()
    assert out.usage.input_tokens > 16 and 1 <= out.usage.output_tokens <= 16
    assert out.usage.total_tokens == out.usage.input_tokens + out.usage.output_tokens


def test_responses_api_streamed(client):
    content = [
        {"type": "input_text", "text": "Name a color."},
        {"type": "input_image", "image_url": scene_url()},
    ]
    ask_it = [{"role": "user", "content": content}]
    events = list(
        client.responses.create(
            model="vislang-default", input=ask_it, max_output_tokens=12, stream=True, temperature=0
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed and streamed == events[-1].response.output_text
    # streamed and whole answers agree (on a text prompt: a repeated image hits the prefix cache,
    # whose short tail runs on the int8 weights, so its greedy answer may differ by rounding)
    stream = client.responses.create(
        model="vislang-default", input="Name a color.", max_output_tokens=12, stream=True
    )
    streamed = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    whole = client.responses.create(model="vislang-default", input="Name a color.", max_output_tokens=12)
    assert whole.output_text == streamed


def test_responses_api_structured_and_tools(client):
    parsed = client.responses.parse(
        model="vislang-default",
        input="Pick a color, a count and whether you are sure.",
        text_format=Verdict,
        max_output_tokens=60,
    )
    assert isinstance(parsed.output_parsed, Verdict)
    tool = {"type": "function", **TIME["function"]}
    first = client.responses.create(
        model="vislang-default",
        input="What time is it in Oslo?",
        tools=[tool],
        tool_choice="required",
        max_output_tokens=60,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_time" and "city" in json.loads(calls[0].arguments)
    history = [
        {"role": "user", "content": "What time is it in Oslo?"},
        calls[0].model_dump(exclude_none=True),
    ]
    history.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "14:05"})
    final = client.responses.create(
        model="vislang-default", input=history, tools=[tool], max_output_tokens=20
    )
    assert final.output_text.strip()
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):
        client.responses.create(model="vislang-default", input="hi", previous_response_id=first.id)


def test_langchain_structured_output_and_tools(client):
    """LangChain's ChatOpenAI against the server, unchanged: with_structured_output and bind_tools."""
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model="vislang-default", base_url=str(client.base_url), api_key=KEY, max_tokens=60, temperature=0
    )
    verdict = llm.with_structured_output(Verdict).invoke("Pick a color, a count and whether you are sure.")
    assert isinstance(verdict, Verdict)

    @tool
    def get_time(city: str) -> str:
        """The local time in a city."""
        return "14:05"

    reply = llm.bind_tools([get_time], tool_choice="get_time").invoke("What time is it in Oslo?")
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "get_time"
    assert isinstance(reply.tool_calls[0]["args"]["city"], str)
