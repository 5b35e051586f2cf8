"""Streaming text out of token ids: deltas that never split a character, a word piece or a stop string.

Decoding one token at a time is wrong twice over: a byte-level BPE token can hold half of a UTF-8
character (decoded alone it is U+FFFD), and a SentencePiece-style piece decoded alone loses its
leading space. So each step decodes a short window of recent tokens, both without and with the
newest ones, and emits only the text the newest tokens added, once it no longer ends in U+FFFD.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"
CONTEXT = 6  # tokens of left context re-decoded with each delta (covers multi-token characters)


class IncrementalDetokenizer:
    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer, self.skip = tokenizer, skip_special_tokens
        self.ids: list[int] = []
        self.prefix = 0  # window start: decoded as left context only
        self.read = 0  # tokens whose text has been emitted

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (often '', while a character is partial)."""
        self.ids.append(token_id)
        before = self.tokenizer.decode(self.ids[self.prefix : self.read], skip_special_tokens=self.skip)
        after = self.tokenizer.decode(self.ids[self.prefix :], skip_special_tokens=self.skip)
        if len(after) <= len(before) or after.endswith(REPLACEMENT):
            return ""
        self.read = len(self.ids)
        self.prefix = max(self.prefix, self.read - CONTEXT)
        return after[len(before) :]

    def flush(self) -> str:
        """Whatever is still held back at the end (a character that never completed)."""
        before = self.tokenizer.decode(self.ids[self.prefix : self.read], skip_special_tokens=self.skip)
        after = self.tokenizer.decode(self.ids[self.prefix :], skip_special_tokens=self.skip)
        self.read = len(self.ids)
        return after[len(before) :] if after.startswith(before) else ""


class StopStrings:
    """Cuts the text at the first stop string and holds back any tail that may begin one, so a
    stream never shows part of a stop string that is about to complete."""

    def __init__(self, stops: list[str]):
        self.stops = list(stops)
        self.text = ""  # everything decoded so far
        self.sent = 0  # characters already released
        self.stopped = False

    def push(self, delta: str) -> str:
        if self.stopped:
            return ""
        self.text += delta
        cut = min((i for i in (self.text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self.text = self.text[:cut]
            return self._release(len(self.text))
        return self._release(len(self.text) - self._pending())

    def flush(self) -> str:
        return self._release(len(self.text))

    def _pending(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of some stop string."""
        longest = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.text)), longest, -1):
                if self.text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _release(self, upto: int) -> str:
        upto = max(upto, self.sent)
        out, self.sent = self.text[self.sent : upto], upto
        return out
