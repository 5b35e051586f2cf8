"""What every route of the server shares: its settings, and refusals in OpenAI's error shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from .images import FetchPolicy


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


def check_model(name: str | None, settings: ServerSettings) -> None:
    """A request may leave the model out; a name that is not the served one is OpenAI's 404."""
    if name and name != settings.model_name:
        raise APIError(
            404,
            f"The model `{name}` does not exist or you do not have access to it. "
            f"This server serves `{settings.model_name}`.",
            code="model_not_found",
        )


def describe(error: ValidationError) -> str:
    parts = []
    for e in error.errors()[:5]:
        where = ".".join(str(x) for x in e["loc"])
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)
