"""The server's OpenAPI description, served at /openapi.json.

Routes read their JSON bodies themselves (to bound their size as they arrive and to answer every
malformed one in OpenAI's error shape), so FastAPI cannot see the request models: they are added
here from the same pydantic classes that validate the requests. Fuzzers (schemathesis) and client
generators read it.
"""

from __future__ import annotations

from fastapi.openapi.utils import get_openapi

from .schema import ChatRequest, EmbeddingRequest

REF = "#/components/schemas/{model}"

# what /v1/responses reads (its full shape is OpenAI's; this names the fields the server uses)
RESPONSES_REQUEST = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "model": {"type": ["string", "null"]},
        "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
        "instructions": {"type": ["string", "null"]},
        "max_output_tokens": {"type": ["integer", "null"], "minimum": 1},
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "stream": {"type": ["boolean", "null"]},
        "tools": {"type": ["array", "null"], "items": {"type": "object"}},
        "text": {"type": ["object", "null"]},
    },
}


def openapi_schema(app, version: str) -> dict:
    spec = get_openapi(title="vislang", version=version, routes=app.routes)
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    bodies = {"/v1/chat/completions": ChatRequest, "/v1/embeddings": EmbeddingRequest}
    for path, model in bodies.items():
        schema = model.model_json_schema(ref_template=REF)
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
        ref = {"$ref": REF.format(model=model.__name__)}
        spec["paths"][path]["post"]["requestBody"] = _json_body(ref)
    spec["paths"]["/v1/responses"]["post"]["requestBody"] = _json_body(RESPONSES_REQUEST)
    spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return spec


def _json_body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}
