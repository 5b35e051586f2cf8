"""Choosing the next token from logits: greedy, temperature, top-k, top-p, repetition penalty."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    max_new_tokens: int | None = 64  # None: until the context ends (the engine fills it in)
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    seed: int | None = None
    repetition_penalty: float = 1.0  # 1.0: off; > 1 discourages tokens already in the prompt or answer
    stop: list[str] = field(default_factory=list)  # strings that end the answer (not returned)
    min_new_tokens: int = 0  # end-of-sequence tokens are masked until this many tokens exist
    logprobs: int | None = None  # None: off; k: each token's log-probability and the k likeliest (<= 20)
    # constrained decoding (the engine): the answer is a JSON object (json_object), or JSON valid
    # against json_schema
    json_object: bool = False
    json_schema: dict | None = None

    def __post_init__(self):
        if self.max_new_tokens is not None and self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise ValueError(f"top logprobs must be in [0, 20], got {self.logprobs}")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        most = self.max_new_tokens if self.max_new_tokens is not None else self.min_new_tokens
        if not 0 <= self.min_new_tokens <= most:
            raise ValueError(f"min_new_tokens must be in [0, max_new_tokens], got {self.min_new_tokens}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")


def penalize_repetition(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty (Keskar et al., 2019): a seen token's logit is divided by the penalty when
    positive and multiplied when negative, so it always becomes less likely. logits [B, V], seen [B, T]."""
    if penalty == 1.0 or seen.numel() == 0:
        return logits
    picked = logits.gather(-1, seen)
    picked = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits.scatter(-1, seen, picked)


def next_token(
    logits: torch.Tensor, p: SamplingParams, generator: torch.Generator | None = None
) -> torch.Tensor:
    """logits [B, V] -> token ids [B]."""
    if not p.do_sample:
        return logits.argmax(-1)
    logits = logits.float() / p.temperature
    if p.top_k > 0:
        kth = torch.topk(logits, min(p.top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass
        drop = probs.cumsum(-1) - probs >= p.top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def token_logprobs(logits: torch.Tensor, token: int, top: int) -> dict:
    """The chosen token's log-probability under the model's distribution (the logits as the model
    gave them, before temperature or penalties) and the `top` likeliest tokens'. logits [1, V]."""
    logp = logits[0].float().log_softmax(-1)
    entry = {"id": token, "logprob": float(logp[token]), "top": []}
    if top:
        values, ids = logp.topk(top)
        entry["top"] = list(zip(ids.tolist(), values.tolist()))
    return entry
