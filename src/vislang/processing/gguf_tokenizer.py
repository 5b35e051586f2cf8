"""A byte-level BPE tokenizer rebuilt from a GGUF file's metadata (no tokenizer.json needed).

GGUF stores the vocabulary (tokenizer.ggml.tokens), the merges, a type per token (1 normal,
3 control, 4 user-defined) and the name of the pre-tokenizer llama.cpp should use
(tokenizer.ggml.pre). The split regexes below are llama.cpp's for each name.

One known difference from transformers (5.x) loading the same file: transformers ignores
tokenizer.ggml.pre == "smollm" and splits with plain GPT-2 rules, so a space before a non-ASCII
numeral (" ²", " ٣", " Ⅻ") merges with it there, while here (as in llama.cpp and SmolLM2's own
tokenizer.json) every numeral stands alone. ASCII text gives identical ids. Pass pre="gpt2" to
get transformers' ids exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as BackendTokenizer

from ..checkpoints.gguf import read_gguf_metadata
from ..errors import CheckpointError
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

CONTROL, USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values (llama.cpp's llama_token_type)

# GPT-2's split, built into tokenizers' ByteLevel(use_regex=True)
_GPT2 = "gpt2"
# Each numeral alone, then GPT-2's split: Digits(individual_digits=True) is llama.cpp's "\p{N}" step.
_DIGITS_THEN_GPT2 = "digits+gpt2"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS = {
    "gpt2": _GPT2,
    "mpt": _GPT2,
    "olmo": _GPT2,
    "smollm": _DIGITS_THEN_GPT2,
    "starcoder": _DIGITS_THEN_GPT2,
    "refact": _DIGITS_THEN_GPT2,
    "command-r": _DIGITS_THEN_GPT2,
    "codeshell": _DIGITS_THEN_GPT2,
    "llama-bpe": _LLAMA3_SPLIT,
    "llama3": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
}


@lru_cache(maxsize=1)
def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character map: printable Latin-1 bytes stand for themselves,
    the other 68 bytes are shifted to U+0100 and up, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = (b for b in range(256) if b not in set(keep))
    table = {b: chr(b) for b in keep}
    table |= {b: chr(256 + i) for i, b in enumerate(shifted)}
    return dict(sorted(table.items()))


def _spelled(token: str, alphabet: set[str]) -> bool:
    return set(token) <= alphabet


def _pre_tokenizer(name: str | None) -> pre_tokenizers.PreTokenizer:
    kind = PRE_TOKENIZERS.get(name or "")
    if kind is None:
        log.warning("unknown tokenizer.ggml.pre %r: splitting with GPT-2's rules", name)
        kind = _GPT2
    if kind == _GPT2:
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if kind == _DIGITS_THEN_GPT2:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(kind), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _post_processor(bos: tuple[str, int] | None, eos: tuple[str, int] | None) -> processors.PostProcessor:
    """BOS/EOS (token, id) added around each sequence, as the file's add_bos_token / add_eos_token ask."""
    a = (f"{bos[0]}:0 " if bos else "") + "$A:0" + (f" {eos[0]}:0" if eos else "")
    b = (f"{bos[0]}:1 " if bos else "") + "$B:1" + (f" {eos[0]}:1" if eos else "")
    return processors.TemplateProcessing(
        single=a, pair=f"{a} {b}", special_tokens=[t for t in (bos, eos) if t]
    )


def gguf_chat_template(metadata: Mapping[str, Any]) -> str | None:
    """The Jinja chat template a GGUF carries (tokenizer.chat_template), if any."""
    template = metadata.get("tokenizer.chat_template")
    return str(template) if template else None


def gguf_tokenizer(metadata: Mapping[str, Any], pre: str | None = None) -> Tokenizer:
    """vislang's Tokenizer from GGUF metadata (tokenizer.ggml.model "gpt2": byte-level BPE).

    pre overrides tokenizer.ggml.pre (see PRE_TOKENIZERS).
    """
    kind = metadata.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise CheckpointError(
            f"GGUF tokenizer.ggml.model {kind!r} is not supported; vislang builds 'gpt2' (byte-level BPE)"
        )
    tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])
    types: list[int] = list(metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in metadata.get("tokenizer.ggml.merges", [])]
    alpha = byte_alphabet()
    alphabet = set(alpha.values())

    # Tokens must be written in the byte alphabet; respell any stored as raw text (later ids win).
    def respell(t: str) -> str:
        return t if _spelled(t, alphabet) else "".join(alpha[b] for b in t.encode("utf-8"))

    vocab = {respell(t): i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab, merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix="")
    backend = BackendTokenizer(bpe)
    backend.pre_tokenizer = _pre_tokenizer(pre or metadata.get("tokenizer.ggml.pre"))
    backend.decoder = decoders.ByteLevel()

    # Control tokens stay whole and are special; a "control" token outside the byte alphabet is a
    # mislabel in some files and is left alone. User-defined tokens stay whole but are plain text.
    added = [
        AddedToken(t, normalized=False, special=token_type == CONTROL)
        for t, token_type in zip(tokens, types)
        if token_type in (CONTROL, USER_DEFINED) and _spelled(t, alphabet)
    ]
    special_tokens, special_ids = {}, {}
    for name, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        token_id = metadata.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None and 0 <= int(token_id) < len(tokens):
            special_tokens[f"{name}_token"] = tokens[int(token_id)]
            special_ids[f"{name}_token"] = int(token_id)
    known = {a.content for a in added if a.special}
    added += [
        AddedToken(t, normalized=False, special=True) for t in special_tokens.values() if t not in known
    ]
    backend.add_tokens(added)

    add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", False))
    add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token", False))
    ends = {}
    for name, wanted in (("bos_token", add_bos), ("eos_token", add_eos)):
        if wanted and name in special_ids:
            ends[name] = (special_tokens[name], special_ids[name])
    if ends:
        backend.post_processor = _post_processor(ends.get("bos_token"), ends.get("eos_token"))
    backend.no_padding()
    backend.no_truncation()
    config = {
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "chat_template": gguf_chat_template(metadata),
        "model_max_length": metadata.get(f"{metadata.get('general.architecture')}.context_length"),
        "clean_up_tokenization_spaces": False,
        **special_tokens,
    }
    return Tokenizer(backend, special_tokens, config)


def load_gguf_tokenizer(path: str | Path, pre: str | None = None) -> Tokenizer:
    """The tokenizer of a GGUF file, reading its metadata only."""
    return gguf_tokenizer(read_gguf_metadata(path), pre=pre)
