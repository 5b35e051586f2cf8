"""Constrained decoding: the answer must match a grammar (JSON of a schema, any JSON object), so it
always parses and validates.

The grammar engine is llguidance, chosen by measurement on SmolLM2's 49152-token vocabulary on a
2-core CPU (a 3-field JSON schema, a 27-token answer): llguidance computes the allowed-token mask in
~21 us (median), xgrammar in ~4 us, outlines-core's precompiled index in ~0.5 us, all far below a
decode step (10-20 ms). llguidance is the one with no dependencies (a 3 MB wheel; xgrammar brings
triton, tvm-ffi and transformers at run time) that compiles any JSON schema, recursive ones included,
on demand (outlines-core builds a whole regex automaton first, which grows with the schema).

JSON is written compactly with ", " and ": " and no other whitespace: a model that may write free
whitespace can loop on it, and this is the layout json.dumps gives.
"""

from __future__ import annotations

import json
from functools import cached_property

import numpy as np
import torch

from ..errors import VislangError

JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class GrammarError(VislangError, ValueError):
    """A schema or grammar that cannot be compiled, or that the vocabulary cannot write."""


class Grammars:
    """Makes constraints for one tokenizer (its vocabulary read once, ~0.3 s, on first use)."""

    def __init__(self, tokenizer, vocab_size: int, eos_ids: list[int]):
        self.tokenizer, self.vocab_size, self.eos_ids = tokenizer, vocab_size, list(eos_ids)

    @cached_property
    def _lltokenizer(self):
        import llguidance

        backend = self.tokenizer.backend
        return llguidance.LLTokenizer(backend.to_str(), n_vocab=self.vocab_size, eos_token=self.eos_ids)

    def json(self, schema: dict | None = None) -> Constraint:
        """Any JSON object (schema None), or JSON valid against `schema`."""
        import llguidance

        schema = {"type": "object"} if schema is None else schema
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), overrides=JSON_LAYOUT)
        except (ValueError, TypeError) as e:
            raise GrammarError(f"the JSON schema cannot be used: {e}") from None
        return self._constraint(grammar, "JSON schema")

    def _constraint(self, grammar: str, what: str = "grammar") -> Constraint:
        import llguidance

        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self._lltokenizer)
        if failed:
            raise GrammarError(f"the {what} cannot be used: {'; '.join(messages)}")
        matcher = llguidance.LLMatcher(self._lltokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(f"the {what} cannot be used: {matcher.get_error()}")
        return Constraint(matcher, self.vocab_size)


class Constraint:
    """One request's grammar state: masks the logits of each step, follows the tokens taken."""

    def __init__(self, matcher, vocab_size: int):
        self.matcher, self.vocab_size = matcher, vocab_size
        self._bits = np.zeros((1, (vocab_size + 31) // 32), dtype=np.int32)

    def allowed(self) -> torch.Tensor:
        """Bool [vocab_size]: the tokens the grammar allows next."""
        from llguidance.numpy import fill_next_token_bitmask

        fill_next_token_bitmask(self.matcher, self._bits)
        if self.matcher.is_error():
            raise GrammarError(f"constrained decoding failed: {self.matcher.get_error()}")
        bits = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: self.vocab_size]
        return torch.from_numpy(bits.astype(bool))

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [1, V] with every token the grammar forbids at -inf."""
        allowed = self.allowed().to(logits.device)
        V = min(len(allowed), logits.shape[-1])
        out = torch.full_like(logits, float("-inf"))
        out[:, :V] = torch.where(allowed[:V], logits[:, :V], float("-inf"))
        return out

    def take(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise GrammarError(f"token {token} does not fit the grammar: {self.matcher.get_error()}")

    @property
    def done(self) -> bool:
        return self.matcher.is_stopped()
