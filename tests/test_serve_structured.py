"""Structured output against `vislang serve` (the default model, a real tokenizer): decoding follows
the schema, so the answer always parses, through the official client's `parse()` too."""

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
    work = tmp_path_factory.mktemp("structured_work")
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
