"""Streaming text: deltas never hold a broken character, their concatenation equals decoding all
ids at once, and stop strings are cut without ever being shown."""

import pytest

from vislang.checkpoints.gguf import smollm2_path
from vislang.generation.detokenize import IncrementalDetokenizer, StopStrings
from vislang.processing.gguf_tokenizer import load_gguf_tokenizer

TEXTS = [
    "The capital of France is Paris.",
    "ünïcödé naïve café 日本語 Привет мир 🙂👍🏽 — done",
    "  spaces\n\n\ttabs and 12345 numbers, 3.14159",
    "🧑‍🚀👩🏾‍🔬 emoji sequences",
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_gguf_tokenizer(smollm2_path())


@pytest.mark.parametrize("text", TEXTS)
def test_byte_level_deltas_are_whole_characters(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.push(i) for i in ids] + [detok.flush()]
    assert "".join(deltas) == tokenizer.decode(ids) == text
    assert not any("\ufffd" in d for d in deltas)
    if any(ord(c) > 0xFFFF for c in text):  # a 4-byte character spans tokens: some deltas must wait
        assert "" in deltas[:-1]


def test_word_pieces_keep_their_spaces(tmp_path):
    """A tokenizer whose decoder joins words with spaces: one token decoded alone has no space."""
    from tiny import tokenizer_dir
    from vislang.processing import Tokenizer

    tokenizer_dir(tmp_path)
    tok = Tokenizer.from_dir(tmp_path)
    ids = tok.encode("what is in the picture ? a red circle", add_special_tokens=False)
    detok = IncrementalDetokenizer(tok)
    deltas = [detok.push(i) for i in ids]
    assert "".join(deltas) == tok.decode(ids) == "what is in the picture ? a red circle"
    assert deltas[1] == " is"


def test_stop_strings_are_held_back_then_cut():
    stops = StopStrings(["END", "\n\n"])
    out = [stops.push(d) for d in ["Hello E", "N", "ough. Then E", "N", "D and more"]]
    assert out == ["Hello ", "", "ENough. Then ", "", ""]
    assert stops.stopped and stops.text == "Hello ENough. Then "
    assert stops.push("more") == ""


def test_stop_string_inside_one_delta_and_flush():
    stops = StopStrings(["\n\n"])
    assert stops.push("a\n") == "a"
    assert stops.push("b") == "\nb"
    assert stops.push("c\n\nd") == "c"
    other = StopStrings(["xyz"])
    assert other.push("abcx") == "abc"
    assert other.flush() == "x"  # the answer ended: a partial stop string is just text
