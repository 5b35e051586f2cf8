"""A local model asked through vislang's continuous-batching engine: an evaluation's many short
questions keep every slot busy (a finished answer frees its slot for the next question at once,
where a static batch waits for its longest answer), and probes of the same image reuse its
features and prompt prefix from the engine's caches."""

from __future__ import annotations

from vislang.generation.engine import Engine


class EngineRunner:
    def __init__(self, model, max_batch: int = 16, max_images: int = 16):
        self.model = model
        self.engine = Engine(model, max_batch=max_batch, max_images=max_images)
        self.video_token_id = getattr(model, "video_token_id", None)  # how the world shows video

    def chat(self, messages: list[dict], max_new_tokens: int = 24) -> str:
        return self.chat_batch([messages], max_new_tokens)[0]

    def chat_batch(self, conversations: list[list[dict]], max_new_tokens: int = 24) -> list[str]:
        return self.chat_budgets(conversations, [max_new_tokens] * len(conversations))

    def chat_budgets(self, conversations: list[list[dict]], budgets: list[int]) -> list[str]:
        """Greedy replies, in order, each within its own max_new_tokens; all are queued at once and
        the engine schedules them."""
        handles = [
            self.engine.submit(m, max_new_tokens=b) for m, b in zip(conversations, budgets, strict=True)
        ]
        return [handle.result().text for handle in handles]

    def close(self) -> None:
        self.engine.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
