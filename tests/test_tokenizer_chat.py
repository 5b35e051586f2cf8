"""Tokenizer and chat template parity with transformers, and image placeholder expansion."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer

from vislang.errors import CheckpointError, ImageTokenMismatchError
from vislang.processing import (
    LLAVA_FALLBACK_CHAT_TEMPLATE,
    Tokenizer,
    expand_image_token_ids,
    expand_image_tokens,
    load_chat_template,
    render_chat,
)

CORPUS = [
    "hello world, this is a test.",
    "The quick brown fox jumps over the lazy dog!",
    "images are worth a thousand words",
    "USER: What is shown here? ASSISTANT: a small cat on a mat",
] * 5
TEXTS = [
    "hello world",
    "  leading spaces and trailing  ",
    "<image>\nWhat is this?",
    "USER: <image>\nWhat is shown? ASSISTANT:",
    "a<s>b</s>c<pad>",
    "héllo wörld ünïcode",
    "",
    "x<image><image>y",
]

LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
CHATML_TEMPLATE = """{% set image_count = namespace(value=0) %}{% for message in messages %}\
{% if loop.first and message['role'] != 'system' %}<|im_start|>system
You are a helpful assistant.<|im_end|>
{% endif %}<|im_start|>{{ message['role'] }}
{% if message['content'] is string %}{{ message['content'] }}<|im_end|>
{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content %}\
{% set image_count.value = image_count.value + 1 %}\
{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>\
{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}\
<|im_end|>
{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""
# Block tags on their own indented lines: only right with trim_blocks and lstrip_blocks.
MULTILINE_TEMPLATE = """{% for message in messages %}
  {% if message['role'] == 'system' %}
SYSTEM: {{ message['content'] if message['content'] is string else message['content'][0]['text'] }}
  {% else %}
    {% for part in (message['content'] if message['content'] is not string else []) %}
      {% if part['type'] == 'image' %}
[img]
      {% endif %}
    {% endfor %}
{{ message['role'] }}: {{ message['content'] if message['content'] is string else
   message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') }}
  {% endif %}
{% endfor %}
{% if add_generation_prompt %}
assistant:
{% endif %}
"""
# Exercises the rest of the environment: bos_token, tojson without HTML escaping, loop controls.
TOOLING_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if loop.index > 3 %}{% break %}{% endif %}"
    "[{{ message['role'] }}]{{ message | tojson }}\n{% endfor %}"
    "{% if tools is not none %}TOOLS{% endif %}{% if add_generation_prompt %}[assistant]{% endif %}"
)

CONVERSATIONS = [
    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}],
    [
        {"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]},
        {"role": "user", "content": [{"type": "text", "text": 'Hi <there> & "you"'}, {"type": "image"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello! Ünïcode ok."}]},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare."}],
        },
    ],
    [
        {
            "role": "user",
            "content": [{"type": "image", "image": Image.new("RGB", (4, 4))}, {"type": "text", "text": "?"}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "A square."}], "name": None},
        {"role": "user", "content": [{"type": "text", "text": "Sure?"}]},
    ],
]
STRING_CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi."},
    {"role": "user", "content": "Bye"},
]


def _byte_level_backend() -> BackendTokenizer:
    backend = BackendTokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=alphabet
    )
    backend.train_from_iterator(CORPUS, trainer)
    backend.add_special_tokens(["<image>"])
    return backend


def _llama_style_backend() -> BackendTokenizer:
    """An old-style Llama tokenizer.json: "▁" prefixing in the normalizer, BOS in the post-processor."""
    backend = BackendTokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    backend.decoder = decoders.Sequence(steps)
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>", *byte_tokens])
    backend.train_from_iterator(CORPUS, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    backend.add_special_tokens(["<image>"])
    return backend


def _with_bos_eos(backend: BackendTokenizer) -> BackendTokenizer:
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B", special_tokens=[("<s>", 1), ("</s>", 2)]
    )
    return backend


AS_DICT = {"lstrip": False, "rstrip": False, "normalized": False, "single_word": False}
SETUPS = {
    "plain": (_byte_level_backend, {"bos_token": "<s>", "eos_token": "</s>"}, None),
    # pad is not in tokenizer.json (gets appended); add_bos_token is ignored next to a tokenizer.json
    "new-pad-and-image-token": (
        _byte_level_backend,
        {
            "bos_token": "<s>",
            "eos_token": "</s>",
            "pad_token": "<pad>",
            "add_bos_token": True,
            "image_token": "<image>",
        },
        None,
    ),
    "legacy-special-tokens-map": (
        lambda: _with_bos_eos(_byte_level_backend()),
        {"eos_token": {"__type": "AddedToken", "content": "</s>", **AS_DICT}},
        {
            "bos_token": {"content": "<s>", **AS_DICT},
            "pad_token": "<pad>",
            "additional_special_tokens": ["<extra>"],
        },
    ),
    "added-tokens-decoder-overrides": (
        _byte_level_backend,
        {
            "bos_token": "<s>",
            "added_tokens_decoder": {"300": {"content": "<image>", **AS_DICT, "rstrip": True}},
        },
        None,
    ),
    "llama": (
        _llama_style_backend,
        {"tokenizer_class": "LlamaTokenizer", "legacy": False, "pad_token": None},
        None,
    ),
    "llama-legacy": (_llama_style_backend, {"tokenizer_class": "LlamaTokenizer", "legacy": True}, None),
    "llama-file-as-is": (_llama_style_backend, {"bos_token": "<s>"}, None),
}


def _write_tokenizer(folder: Path, setup: str) -> Path:
    make_backend, config, special_tokens_map = SETUPS[setup]
    folder.mkdir(parents=True, exist_ok=True)
    make_backend().save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **config}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    if special_tokens_map is not None:
        (folder / "special_tokens_map.json").write_text(json.dumps(special_tokens_map))
    return folder


def _assert_same_tokenizer(ours: Tokenizer, theirs) -> None:
    for text in TEXTS:
        for add_special_tokens in (True, False):
            ids = theirs.encode(text, add_special_tokens=add_special_tokens)
            assert ours.encode(text, add_special_tokens=add_special_tokens) == ids, (text, add_special_tokens)
            for skip in (True, False):
                assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(
                    ids, skip_special_tokens=skip
                )
    assert len(ours) == len(theirs) and ours.vocab_size == theirs.vocab_size
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id) == (
        theirs.bos_token_id,
        theirs.eos_token_id,
        theirs.pad_token_id,
    )
    assert ours.special_tokens == theirs.special_tokens_map
    for token in ("<s>", "</s>", "<image>"):
        assert ours.token_to_id(token) == theirs.convert_tokens_to_ids(token)
    assert ours.id_to_token(1) == theirs.convert_ids_to_tokens(1)


@pytest.mark.parametrize("setup", list(SETUPS))
def test_tokenizer_matches_auto_tokenizer(setup: str, tmp_path: Path):
    folder = _write_tokenizer(tmp_path / setup, setup)
    _assert_same_tokenizer(Tokenizer.from_dir(folder), AutoTokenizer.from_pretrained(folder))


def test_folder_without_tokenizer_json_is_refused(tmp_path: Path):
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        Tokenizer.from_dir(tmp_path)


def test_llama_class_drops_the_prefix_after_special_tokens(tmp_path: Path):
    # The case the Llama rebuild exists for: transformers 5 and the raw file disagree after "<image>".
    rebuilt = Tokenizer.from_dir(_write_tokenizer(tmp_path / "a", "llama"))
    as_is = Tokenizer.from_dir(_write_tokenizer(tmp_path / "b", "llama-file-as-is"))
    assert rebuilt.encode("<image>\nWhat") != as_is.encode("<image>\nWhat")


def test_save_round_trip(tmp_path: Path):
    tokenizer = Tokenizer.from_dir(_write_tokenizer(tmp_path / "src", "new-pad-and-image-token"))
    tokenizer.save(tmp_path / "out")
    _assert_same_tokenizer(
        Tokenizer.from_dir(tmp_path / "out"), AutoTokenizer.from_pretrained(tmp_path / "src")
    )
    _assert_same_tokenizer(tokenizer, AutoTokenizer.from_pretrained(tmp_path / "out"))


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_encode_pads_like_transformers(side: str, tmp_path: Path):
    folder = _write_tokenizer(tmp_path, "new-pad-and-image-token")
    texts = ["hello world", "a", "The quick brown fox jumps"]
    batch = Tokenizer.from_dir(folder).batch_encode(texts, padding_side=side)
    expected = AutoTokenizer.from_pretrained(folder)(
        texts, padding=True, padding_side=side, return_tensors="pt"
    )
    assert batch["input_ids"].dtype == torch.long and batch["attention_mask"].dtype == torch.long
    assert torch.equal(batch["input_ids"], expected["input_ids"])
    assert torch.equal(batch["attention_mask"], expected["attention_mask"])


def test_batch_encode_falls_back_to_eos_for_padding(tmp_path: Path):
    tokenizer = Tokenizer.from_dir(_write_tokenizer(tmp_path, "plain"))
    assert tokenizer.pad_token_id is None
    batch = tokenizer.batch_encode(["hello world", "a"])
    assert batch["input_ids"][1, 0].item() == tokenizer.eos_token_id
    assert batch["attention_mask"][1].tolist() == [0] * (batch["attention_mask"].shape[1] - 1) + [1]


@pytest.mark.parametrize(
    "template",
    [LLAVA_TEMPLATE, CHATML_TEMPLATE, MULTILINE_TEMPLATE, TOOLING_TEMPLATE],
    ids=["llava", "chatml", "multiline", "tools"],
)
def test_render_chat_matches_apply_chat_template(template: str, tmp_path: Path):
    folder = _write_tokenizer(tmp_path, "new-pad-and-image-token")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}))
    theirs = AutoTokenizer.from_pretrained(folder)
    ours = Tokenizer.from_dir(folder)
    conversations = CONVERSATIONS + ([STRING_CONVERSATION] if template != LLAVA_TEMPLATE else [])
    for conversation in conversations:
        for add_generation_prompt in (True, False):
            expected = theirs.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=add_generation_prompt, add_vision_id=True
            )
            actual = render_chat(
                load_chat_template(folder),
                conversation,
                add_generation_prompt=add_generation_prompt,
                special_tokens=ours.special_tokens,
                add_vision_id=True,
            )
            assert actual == expected


def test_fallback_template_renders_llava_prompts():
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}
    ]
    assert (
        render_chat(LLAVA_FALLBACK_CHAT_TEMPLATE, conversation) == "USER: <image>\nWhat is this? ASSISTANT:"
    )
    two_turns = [
        *conversation,
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "Sure?"},
    ]
    expected = "USER: <image>\nWhat is this? ASSISTANT: A cat. USER: Sure? ASSISTANT:"
    assert render_chat(LLAVA_FALLBACK_CHAT_TEMPLATE, two_turns) == expected


def test_template_helpers_and_sandbox():
    with pytest.raises(jinja2.TemplateError, match="no system role"):
        render_chat("{{ raise_exception('no system role') }}", [{"role": "user", "content": "x"}])
    with pytest.raises(jinja2.exceptions.SecurityError):
        render_chat("{% set ns = namespace(_secret=1) %}", [{"role": "user", "content": "x"}])
    with pytest.raises(jinja2.exceptions.SecurityError):
        render_chat("{{ messages.append(1) }}", [{"role": "user", "content": "x"}])
    year = render_chat("{{ strftime_now('%Y') }}", [{"role": "user", "content": "x"}])
    assert year.isdigit() and len(year) == 4
    with pytest.raises(ValueError, match="empty"):
        render_chat(LLAVA_TEMPLATE, [])


def test_chat_template_sources_in_order(tmp_path: Path):
    assert load_chat_template(tmp_path) is None
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "from-config"}))
    assert load_chat_template(tmp_path) == "from-config"
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": "from-json"}))
    assert load_chat_template(tmp_path) == "from-json"
    (tmp_path / "chat_template.jinja").write_text("from-jinja {{ messages | length }}\n")
    assert load_chat_template(tmp_path) == "from-jinja {{ messages | length }}\n"
    named = [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "plain"}]
    (tmp_path / "named").mkdir()
    (tmp_path / "named" / "tokenizer_config.json").write_text(json.dumps({"chat_template": named}))
    assert load_chat_template(tmp_path / "named") == "plain"


def test_chat_template_jinja_takes_precedence_like_transformers(tmp_path: Path):
    folder = _write_tokenizer(tmp_path, "plain")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": LLAVA_TEMPLATE}))
    (folder / "chat_template.jinja").write_text(CHATML_TEMPLATE)
    assert (
        load_chat_template(folder) == CHATML_TEMPLATE == AutoTokenizer.from_pretrained(folder).chat_template
    )


def test_expand_image_tokens():
    assert expand_image_tokens("a <image> b <image>c", "<image>", [2, 3]) == (
        "a <image><image> b <image><image><image>c"
    )
    assert expand_image_tokens("no images", "<image>", []) == "no images"
    assert expand_image_tokens("<image>", "<image>", [0]) == ""
    with pytest.raises(ImageTokenMismatchError) as error:
        expand_image_tokens("one <image> only", "<image>", [5, 7])
    assert "1 '<image>' placeholder" in str(error.value) and "2 image(s)" in str(error.value)


def test_expand_image_token_ids():
    assert expand_image_token_ids([5, 9, 6, 9], 9, [2, 1]) == [5, 9, 9, 6, 9]
    with pytest.raises(ImageTokenMismatchError) as error:
        expand_image_token_ids([5, 9, 9, 9], 9, [4])
    assert "3 image token id 9 placeholder" in str(error.value) and "1 image(s)" in str(error.value)


def test_rendered_and_expanded_prompt_tokenizes_to_the_right_image_count(tmp_path: Path):
    tokenizer = Tokenizer.from_dir(_write_tokenizer(tmp_path, "new-pad-and-image-token"))
    prompt = render_chat(LLAVA_TEMPLATE, CONVERSATIONS[1], special_tokens=tokenizer.special_tokens)
    image_id = tokenizer.token_to_id("<image>")
    counts = [4, 6, 5]
    from_text = tokenizer.encode(expand_image_tokens(prompt, "<image>", counts))
    from_ids = expand_image_token_ids(tokenizer.encode(prompt), image_id, counts)
    assert from_text == from_ids
    assert from_ids.count(image_id) == sum(counts)
