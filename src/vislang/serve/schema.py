"""The request bodies the server accepts, in the OpenAI chat-completions shape (unknown fields are
ignored, as OpenAI-compatible servers do, so clients that send extra options keep working)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class ImageURL(_Lenient):
    url: str
    detail: str | None = None


class ImagePart(_Lenient):
    type: Literal["image_url"]
    image_url: ImageURL | str

    @property
    def url(self) -> str:
        return self.image_url if isinstance(self.image_url, str) else self.image_url.url


class VideoPart(_Lenient):
    """vLLM's extension for videos: a data:video/...;base64 URL, or file:// under --file-root."""

    type: Literal["video_url"]
    video_url: ImageURL | str

    @property
    def url(self) -> str:
        return self.video_url if isinstance(self.video_url, str) else self.video_url.url


Part = Annotated[TextPart | ImagePart | VideoPart, Field(discriminator="type")]


class MediaOptions(_Lenient):
    """vLLM's mm_processor_kwargs: how images and videos of this request are read (models that read
    images at their native resolution: fewer pixels, fewer tokens, faster answers)."""

    min_pixels: int | None = Field(None, ge=1)
    max_pixels: int | None = Field(None, ge=1)
    fps: float | None = Field(None, gt=0, le=60)
    max_frames: int | None = Field(None, ge=1)


class Message(_Lenient):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[Part] | None = None
    tool_calls: list[dict] | None = None  # an assistant turn that called functions
    tool_call_id: str | None = None  # a tool result: the call it answers
    name: str | None = None


class FunctionDef(_Lenient):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None


class ToolDef(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionDef


class StreamOptions(_Lenient):
    include_usage: bool = False


class JSONSchemaFormat(_Lenient):
    name: str | None = None
    schema_: dict | None = Field(None, alias="schema")
    strict: bool | None = None  # the schema is always enforced


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class ChatRequest(_Lenient):
    """Every optional field also takes JSON null, as OpenAI's reference allows (the SDK sends null
    whenever a caller passes None)."""

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)  # None or 0: greedy
    top_p: float | None = Field(None, ge=0, le=1)  # 0: greedy
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(None, ge=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    repetition_penalty: float | None = Field(None, gt=0)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict | None = None
    parallel_tool_calls: bool | None = None
    mm_processor_kwargs: MediaOptions | None = None


class EmbeddingRequest(_Lenient):
    model: str | None = None
    input: str | list[str]
    encoding_format: Literal["float", "base64"] | None = None
