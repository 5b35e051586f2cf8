"""A thin tokenizer over `tokenizers.Tokenizer`, loaded from a Hugging Face tokenizer folder.

Parity with transformers (5.x) comes from replaying what its TokenizersBackend does at load time,
since token ids must match the ones the checkpoint was trained on:
- with a tokenizer.json present, `add_bos_token` / `add_eos_token` in the config are ignored and
  the file's post-processor decides; a file without one adds no special tokens at all;
- the config's `added_tokens_decoder` (else the file's added tokens, plus special_tokens_map.json)
  is added again, and named special tokens missing from the added tokens are appended as new
  special tokens, which can create ids the file does not have;
- tokenizer_class LlamaTokenizer rebuilds the text pipeline the way transformers' class does
  (Metaspace pre-tokenizer, no normalizer), which differs from older tokenizer.json files
  right after special tokens such as "<image>\n".
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, decoders, pre_tokenizers
from tokenizers import Tokenizer as BackendTokenizer

from vislang.errors import CheckpointError

logger = logging.getLogger(__name__)

# The named special tokens transformers knows, in its order (new tokens get ids in this order).
NAMED_SPECIAL_TOKENS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
_LLAMA_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast")
# Keys of AddedToken's constructor; serialized tokens may carry others ("id", "__type").
_ADDED_TOKEN_KEYS = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _added_token(value: Any, special: bool | None = None) -> AddedToken | str:
    """A config value ("<s>" or {"content": "<s>", ...}) as the object transformers would hold."""
    if isinstance(value, AddedToken):
        return value
    if not isinstance(value, Mapping):
        return str(value)
    props = {k: value[k] for k in _ADDED_TOKEN_KEYS if k in value}
    if special is not None:
        props["special"] = special
    return AddedToken(**props)


class Tokenizer:
    """Encode and decode text with ids identical to transformers' fast tokenizer for the same folder."""

    def __init__(
        self, backend: BackendTokenizer, special_tokens: Mapping[str, str], config: Mapping[str, Any]
    ):
        self.backend = backend
        self.special_tokens = dict(special_tokens)  # e.g. {"bos_token": "<s>", "image_token": "<image>"}
        self.config = dict(config)
        self.model_max_length: int | None = config.get("model_max_length")
        self._cleanup = bool(config.get("clean_up_tokenization_spaces", False))

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> Tokenizer:
        folder = Path(path)
        if not (folder / "tokenizer.json").is_file():
            raise CheckpointError(f"no tokenizer.json in {folder}; vislang reads fast-tokenizer folders only")
        config = _read_json(folder / "tokenizer_config.json")
        backend = BackendTokenizer.from_file(str(folder / "tokenizer.json"))
        if config.get("tokenizer_class") in _LLAMA_CLASSES:
            for key, default in (("unk_token", "<unk>"), ("bos_token", "<s>"), ("eos_token", "</s>")):
                config.setdefault(key, default)
            _rebuild_llama_pipeline(backend, config)

        if "added_tokens_decoder" in config:
            added = {int(i): _added_token(tok) for i, tok in config["added_tokens_decoder"].items()}
        else:
            # Without added_tokens_decoder, transformers reads the legacy special_tokens_map.json
            # (its entries win over the config) and re-adds the file's own added tokens.
            for key, value in _read_json(folder / "special_tokens_map.json").items():
                config[key] = _added_token(value, special=True) if isinstance(value, Mapping) else value
            added = {i: tok for i, tok in backend.get_added_tokens_decoder().items()}

        named = {k: config[k] for k in NAMED_SPECIAL_TOKENS if config.get(k) is not None}
        named = {k: _added_token(v) for k, v in named.items()}
        # Other "<name>_token" string keys (image_token, ...) are model-specific special tokens.
        named |= {
            k: v for k, v in config.items() if k.endswith("_token") and k not in named and isinstance(v, str)
        }
        extras = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
        if isinstance(extras, Mapping):
            named |= {k: _added_token(v) for k, v in extras.items()}
            extras = []
        extras = [_added_token(v) for v in extras]
        _add_missing_tokens(backend, added, named.values(), extras)

        # Encoding never pads or truncates here (transformers switches both off per call).
        backend.no_padding()
        backend.no_truncation()
        backend.encode_special_tokens = bool(config.get("split_special_tokens", False))
        return cls(backend, {k: str(v) for k, v in named.items()}, config)

    # --- ids and tokens ---

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: int | Iterable[int], skip_special_tokens: bool = True) -> str:
        ids = [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]
        text = self.backend.decode(ids, skip_special_tokens=skip_special_tokens)
        if self._cleanup and type(self.backend.model).__name__ != "BPE":
            # transformers' WordPiece-era cleanup; it refuses to apply it to BPE, and so do we.
            for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'")):
                text = text.replace(before, after)
            for suffix in ("n't", "'m", "'s", "'ve", "'re"):
                text = text.replace(" " + suffix, suffix)
        return text

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(int(token_id))

    def _special_id(self, name: str) -> int | None:
        token = self.special_tokens.get(name)
        return None if token is None else self.token_to_id(token)

    @property
    def bos_token_id(self) -> int | None:
        return self._special_id("bos_token")

    @property
    def eos_token_id(self) -> int | None:
        return self._special_id("eos_token")

    @property
    def pad_token_id(self) -> int | None:
        return self._special_id("pad_token")

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary, without added tokens (transformers' `vocab_size`)."""
        return self.backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        """All ids, added tokens included (transformers' `len(tokenizer)`)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    # --- batches ---

    def batch_encode(
        self, texts: Sequence[str], padding_side: str = "left", add_special_tokens: bool = True
    ) -> dict[str, torch.Tensor]:
        """Encode and pad to the longest text; left padding lines up every prompt's end for generation."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        pad_id = self.pad_token_id if self.pad_token_id is not None else self.eos_token_id
        if pad_id is None:
            raise ValueError("tokenizer has neither a pad nor an eos token to pad with")
        rows = [self.encode(text, add_special_tokens=add_special_tokens) for text in texts]
        width = max((len(r) for r in rows), default=0)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
            input_ids[i, span] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, span] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    # --- saving ---

    def save(self, path: str | os.PathLike) -> None:
        """Write tokenizer.json and tokenizer_config.json; from_dir (or transformers) reloads the same."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(folder / "tokenizer.json"))
        config = {k: v for k, v in self.config.items() if not isinstance(v, AddedToken)}
        config.update(self.special_tokens)
        config["added_tokens_decoder"] = {
            str(i): {k: getattr(tok, k) for k in _ADDED_TOKEN_KEYS}
            for i, tok in sorted(self.backend.get_added_tokens_decoder().items())
        }
        with open(folder / "tokenizer_config.json", "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, ensure_ascii=False)


def _add_missing_tokens(
    backend: BackendTokenizer,
    added: Mapping[int, AddedToken | str],
    named: Iterable[AddedToken | str],
    extras: Iterable[AddedToken | str],
) -> None:
    """Add tokens the way transformers' TokenizersBackend does after loading.

    Every token of `added` is added again (this updates its flags), then each named or extra special
    token not yet an added token is appended. Named tokens are always flagged special.
    """
    to_add = [tok for _, tok in sorted(added.items())]
    known = {tok.content for tok in backend.get_added_tokens_decoder().values()} | {str(t) for t in to_add}
    for token in [*named, *extras]:
        if str(token) not in known:
            to_add.append(token)
            known.add(str(token))
    named_contents = {str(t) for t in named}
    tokens = []
    for token in to_add:
        if isinstance(token, str):
            token = AddedToken(token, special=True)
        elif not token.special and token.content in named_contents:
            token.special = True
        tokens.append(token)
    if tokens:
        backend.add_tokens(tokens)


def _rebuild_llama_pipeline(backend: BackendTokenizer, config: Mapping[str, Any]) -> None:
    """Set the normalizer, pre-tokenizer, decoder and BPE flags that transformers' LlamaTokenizer uses.

    Older Llama tokenizer.json files prepend "▁" in a normalizer, which runs again after every added
    token; transformers 5 instead prepends once at the start ("first"), unless `legacy` is set.
    """
    add_prefix_space = config.get("add_prefix_space")
    add_prefix_space = True if add_prefix_space is None else bool(add_prefix_space)
    if not add_prefix_space:
        scheme = "never"
    else:
        scheme = "always" if config.get("legacy", False) else "first"
    backend.normalizer = None
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix_space:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    backend.decoder = decoders.Sequence(steps)
    model = backend.model
    if type(model).__name__ == "BPE":
        # transformers builds BPE(vocab, merges, fuse_unk=True, byte_fallback=True), other flags default.
        model.fuse_unk, model.byte_fallback, model.dropout, model.unk_token = True, True, None, None
        model.continuing_subword_prefix, model.end_of_word_suffix, model.ignore_merges = None, None, False
    else:
        logger.warning("LlamaTokenizer config over a %s model; kept the model as is", type(model).__name__)
