"""The OpenAI-compatible server (needs the `serve` extras: fastapi, uvicorn, pydantic)."""
