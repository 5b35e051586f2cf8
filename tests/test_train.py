"""Training: recipes, LoRA, chat turns, the loop's exact resume, its logs. All on a tiny random model."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import models, pre_tokenizers

from vislang.config import TextConfig
from vislang.data.world import generate_sample
from vislang.models.default import DefaultConfig, DefaultVLM
from vislang.processing import Tokenizer
from vislang.text import Decoder
from vislang.train import RecipeError, add_lora, load_recipe, lr_at, merge_lora, parse_recipe, train
from vislang.train import loop as loop_module
from vislang.train.chat_data import CHAT_QUESTIONS, chat_turns, distill_answers, finished_answer
from vislang.train.cli import add_train_parser, cmd_train
from vislang.train.loop import (
    CHAT_TURNS,
    CHECKPOINT,
    StageData,
    make_optimizer,
    save_checkpoint,
    set_trainable,
    train_step,
)
from vislang.train.report import PLOT_SIZE, read_log
from vislang.vision.mobilenet import MobileNetV2, MobileNetV2Config

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SPECIALS = ["<unk>", "<|im_start|>", "<|im_end|>", "<reponame>"]
# stride 2 (stem) x 2^4 = 32, as the real network: 64 px -> a 2x2 grid -> one merged image token
SMALL_MOBILENET = MobileNetV2Config(
    stem_channels=8,
    feature_channels=64,
    num_classes=10,
    settings=((1, 8, 1, 1), (2, 16, 1, 2), (2, 16, 1, 2), (2, 32, 1, 2), (2, 32, 1, 2)),
)
TURNS = [
    {"question": "Hello!", "answer": "Hello! How can I help you today?"},
    {"question": "What is 7 plus 5?", "answer": "7 plus 5 is 12."},
    {"question": "Tell me a joke.", "answer": "Why did the circle roll? It was round."},
]


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory) -> Path:
    """A word-level tokenizer over the words the tests use, with SmolLM2's chat and image tokens."""
    texts = list(CHAT_QUESTIONS) + [t["answer"] for t in TURNS]
    texts += ["system user assistant You are a helpful AI assistant named SmolLM, trained by Hugging Face"]
    for family in ("scene", "text"):
        for i in range(40):
            s = generate_sample(family, "train", 0, i)
            texts += [s.question, s.answer]
    split = pre_tokenizers.Whitespace()
    words = sorted({w for t in texts for w, _ in split.pre_tokenize_str(t)})
    vocab = {tok: i for i, tok in enumerate(SPECIALS + words)}
    backend = BackendTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = split
    backend.add_special_tokens(SPECIALS[1:])
    path = tmp_path_factory.mktemp("tokenizer")
    backend.save(str(path / "tokenizer.json"))
    config = {"eos_token": "<|im_end|>", "pad_token": "<|im_end|>", "unk_token": "<unk>"}
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


def tiny_model(tokenizer_path: Path, seed: int = 0) -> DefaultVLM:
    """The default model's architecture at toy size: the same seed gives the same weights."""
    torch.manual_seed(seed)
    tok = Tokenizer.from_dir(tokenizer_path)
    text = TextConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
    )
    decoder = Decoder(text)
    # N(0, 1) embeddings (tied to the head) make losses of ~30 that barely move; a trained LM's are small
    torch.nn.init.normal_(decoder.embed_tokens.weight, std=0.2)
    cfg = DefaultConfig(image_size=64, vision_dim=64, text_dim=32)
    return DefaultVLM(cfg, MobileNetV2(SMALL_MOBILENET), decoder, tok)


def tiny_recipe(steps=(3, 3), lora: bool = True, **top):
    return parse_recipe(
        {
            "model": {"lora_rank": 2 if lora else 0, "lora_alpha": 4.0},
            "data": {"seed": 3, "image_size": 64},
            "stage": [
                {
                    "name": "align",
                    "steps": steps[0],
                    "batch_size": 2,
                    "lr": 1e-2,
                    "warmup_steps": 1,
                    "families": {"scene": 1.0},
                    "qtypes": {"scene": ["caption"]},
                },
                {
                    "name": "instruct",
                    "steps": steps[1],
                    "batch_size": 2,
                    "grad_accum": 2,
                    "lr": 5e-3,
                    "min_lr": 1e-4,
                    "weight_decay": 0.1,
                    "train": ["projector", "lora"] if lora else ["projector"],
                    "families": {"scene": 0.5, "text": 0.2, "chat": 0.3},
                    "paraphrase": True,
                },
            ],
            **top,
        }
    )


def run(tokenizer_path, out: Path, recipe, **kw):
    """train() on a fresh tiny model, with the chat turns cached as a real run would have them."""
    out.mkdir(parents=True, exist_ok=True)
    (out / CHAT_TURNS).write_text(json.dumps({"turns": TURNS}))
    return train(recipe, out, model=tiny_model(tokenizer_path), progress=False, **kw)


# --- recipes ---


def test_shipped_recipes_parse():
    default = load_recipe(RECIPES / "default.toml")
    assert [s.name for s in default.stages] == ["align", "instruct"]
    assert default.stages[0].qtypes == {"scene": ["caption"]}
    assert default.stages[1].families["chat"] > 0 and default.stages[1].paraphrase
    assert all(8 <= s.batch_size <= 16 for s in default.stages)
    assert load_recipe(RECIPES / "tiny.toml").total_steps < 20
    v1 = load_recipe(RECIPES / "default-qwen.toml")
    assert v1.model.kind == "qwen2vl" and [s.train for s in v1.stages] == [["merger"], ["vision", "merger"]]
    every = {"scene", "text", "multi", "video", "document", "ui", "fashion", "digits", "chat"}
    assert set(v1.stages[-1].families) == every


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r["stage"][0].update(stpes=3), "unknown keys in stage 0"),
        (lambda r: r["stage"][0].update(families={"scenes": 1.0}), "unknown family 'scenes'"),
        (lambda r: r.update(optimizer={}), "unknown keys at the top level: optimizer"),
        (lambda r: r["model"].update(lora_rank=0), "trains 'lora' but [model].lora_rank is 0"),
        (lambda r: r["stage"][0].update(qtypes={"scene": ["colour"]}), "unknown ['colour']"),
        (lambda r: r["stage"][0].update(steps="10"), "stage 0.steps must be int"),
        (lambda r: r["stage"][0].update(train=["vision"]), "train must list parts"),
        (lambda r: r["stage"][0].update(warmup_steps=99), "warmup_steps"),
        (lambda r: r["stage"][1].update(families={"chat": 1.0}), "chat turns need a world family"),
        (lambda r: r.update(stage=[]), "at least one [[stage]]"),
    ],
)
def test_recipe_errors(change, message):
    table = {
        "model": {"lora_rank": 2},
        "stage": [
            {"name": "a", "steps": 2, "families": {"scene": 1.0}},
            {"name": "b", "steps": 2, "train": ["lora"], "families": {"scene": 1.0, "chat": 0.1}},
        ],
    }
    change(table)
    with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_recipe(table)


def test_recipe_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="no recipe"):
        load_recipe(tmp_path / "missing.toml")


def test_cosine_schedule_golden_values():
    stage = parse_recipe(
        {"stage": [{"name": "s", "steps": 10, "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 2}]}
    ).stages[0]
    golden = [
        5e-4,
        1e-3,
        1e-3,
        9.65746e-4,
        8.68198e-4,
        7.22207e-4,
        5.5e-4,
        3.77793e-4,
        2.31802e-4,
        1.34254e-4,
    ]
    assert [lr_at(stage, s) for s in range(10)] == pytest.approx(golden, rel=1e-5)
    assert lr_at(stage, 10) == pytest.approx(1e-4)  # past the end: the floor


# --- LoRA ---


def test_lora_starts_as_a_no_op_and_merges_exactly():
    cfg = TextConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    decoder = Decoder(cfg).eval()
    ids = torch.randint(0, 50, (2, 7))
    before = decoder(ids)
    wrapped = add_lora(decoder, ["q_proj", "v_proj"], rank=4, alpha=8.0)
    assert wrapped == [f"layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    assert "layers.0.self_attn.q_proj.lora_A" in decoder.state_dict()
    assert "layers.0.self_attn.q_proj.weight" in decoder.state_dict()  # frozen keys keep their names
    torch.testing.assert_close(decoder(ids), before, rtol=0, atol=0)

    for name, p in decoder.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    adapted = decoder(ids)
    assert not torch.allclose(adapted, before, atol=1e-3)
    assert merge_lora(decoder) == 4
    assert not any(".lora_" in k for k in decoder.state_dict())
    torch.testing.assert_close(decoder(ids), adapted, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no nn.Linear"):
        add_lora(decoder, ["qproj"], rank=4, alpha=8.0)


# --- chat turns ---


def test_finished_answer_trims_cut_replies():
    assert finished_answer(" Paris. ", hit_limit=False) == "Paris."
    assert finished_answer("It is Paris. It has many", hit_limit=True) == "It is Paris."
    assert finished_answer("It is a long", hit_limit=True) is None


def test_distilled_turns_are_the_models_own_and_cached(tokenizer_path, tmp_path):
    model = tiny_model(tokenizer_path)
    tok = model.tokenizer
    seen = {}

    answer = tok.encode("7 plus 5 is 12", add_special_tokens=False)
    rows = [answer + [tok.eos_token_id], tok.encode("How can I help you today", add_special_tokens=False)]
    assert len(rows[0]) == len(rows[1]) == 6

    def fake_generate(input_ids, attention_mask, max_new_tokens):
        seen["mask"] = attention_mask
        return torch.tensor(rows)

    model.generate = fake_generate
    pairs = distill_answers(model, ["What is 7 plus 5?", "Hello!"], max_new_tokens=6)
    # the second reply hit the token limit without a full sentence: dropped
    assert pairs == [{"question": "What is 7 plus 5?", "answer": tok.decode(answer)}]
    assert seen["mask"][:, -1].all() and not seen["mask"][:, 0].all()  # left-padded prompts

    path = tmp_path / CHAT_TURNS
    rows.pop()
    assert chat_turns(model, path, ["What is 7 plus 5?"], max_new_tokens=6) == pairs
    assert chat_turns(None, path) == pairs  # from the cache: no model needed


def test_stage_data_is_a_pure_function_of_the_index():
    recipe = tiny_recipe(steps=(3, 10))  # 40 examples in the instruct stage
    first, again = StageData(recipe, 1, TURNS), StageData(recipe, 1, TURNS)
    examples = [first(i) for i in range(40)]
    assert [a for _, a in examples] == [again(i)[1] for i in range(40)]
    chats = [(m, a) for m, a in examples if a in {t["answer"] for t in TURNS}]
    with_image = [m for m, _ in chats if any(p["type"] == "image" for p in m[0]["content"])]
    assert 0 < len(with_image) < len(chats)  # some chat turns carry an (unrelated) image, some do not
    assert StageData(recipe, 0, [])(0)[1] != examples[0][1]  # another stage, another stream


# --- the loop ---


def test_loss_falls_when_overfitting_one_batch(tokenizer_path):
    model = tiny_model(tokenizer_path)
    recipe = tiny_recipe()
    add_lora(model.language_model, ["q_proj", "v_proj"], 2, 4.0)
    data = StageData(recipe, 1, TURNS)
    batch = model.training_batch([data(i) for i in range(4)])
    optimizer = make_optimizer(set_trainable(model.train(), ["projector", "lora"]), recipe.stages[1])
    losses = [train_step(model, optimizer, [batch], lr=3e-2) for _ in range(30)]
    assert losses[-1] < 0.6 * losses[0], losses


def test_only_trainable_parts_change(tokenizer_path, tmp_path):
    recipe = tiny_recipe(steps=(2, 2))
    before = {k: v.clone() for k, v in tiny_model(tokenizer_path).state_dict().items()}
    result = run(tokenizer_path, tmp_path / "a", recipe, max_steps=2)  # the projector-only stage
    after = result.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if k.startswith("projector.")}
    lora = {k: v.clone() for k, v in after.items() if ".lora_" in k}
    assert lora and result.model.vision.training is False

    resumed = train(recipe, tmp_path / "a", resume=True, model=tiny_model(tokenizer_path), progress=False)
    final = resumed.model.state_dict()
    assert all(not torch.equal(lora[k], final[k]) for k in lora)  # the instruct stage trains LoRA
    frozen = [k for k in before if not k.startswith("projector.")]
    assert all(torch.equal(before[k], final[k]) for k in frozen)


def test_resume_continues_exactly(tokenizer_path, tmp_path):
    recipe = tiny_recipe(steps=(3, 3))
    straight = run(tokenizer_path, tmp_path / "straight", recipe)
    assert straight.finished and len(straight.log) == 6

    out = tmp_path / "split"
    # stop mid-stage, again past the stage boundary mid-stage, then finish: a fresh model each time
    first = run(tokenizer_path, out, recipe, max_steps=2)
    assert not first.finished and len(first.log) == 2
    second = train(recipe, out, resume=True, model=tiny_model(tokenizer_path), progress=False, max_steps=2)
    assert not second.finished and len(second.log) == 4
    last = train(recipe, out, resume=True, model=tiny_model(tokenizer_path), progress=False)
    assert last.finished

    def losses(result):
        return [(r["step"], r["stage"], r["loss"]) for r in result.log]

    for (s1, g1, l1), (s2, g2, l2) in zip(losses(straight), losses(last), strict=True):
        assert (s1, g1) == (s2, g2) and l1 == pytest.approx(l2, abs=1e-6)
    a, b = straight.model.trainable_state(), last.model.trainable_state()
    assert set(a) == set(b) and any(".lora_" in k for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    rows = read_log(out / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(6))

    with pytest.raises(Exception, match="already holds a run"):
        train(recipe, out, model=tiny_model(tokenizer_path), progress=False)


def test_run_writes_log_plot_checkpoint_and_weights(tokenizer_path, tmp_path):
    out = tmp_path / "run"
    result = run(tokenizer_path, out, tiny_recipe(steps=(2, 2), lora=False))
    rows = read_log(out / "log.csv")
    assert list(rows[0]) == ["step", "stage", "loss", "lr", "samples_per_s", "elapsed_s"]
    assert [r["stage"] for r in rows] == ["align"] * 2 + ["instruct"] * 2
    assert all(math.isfinite(float(r["loss"])) and float(r["samples_per_s"]) > 0 for r in rows)
    with Image.open(out / "loss.png") as image:
        assert image.format == "PNG" and image.size == PLOT_SIZE
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 3  # axes, lines, text
    ckpt = torch.load(out / CHECKPOINT, weights_only=False)
    assert (ckpt["stage"], ckpt["step"], len(ckpt["log"])) == (2, 0, 4)
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]

    reloaded = tiny_model(tokenizer_path)
    reloaded.load_trained(out / "trained")
    for k, v in result.model.trainable_state().items():  # stored in bfloat16
        torch.testing.assert_close(reloaded.trainable_state()[k], v, rtol=1e-2, atol=1e-2)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / CHECKPOINT
    save_checkpoint(path, {"step": 1})

    def crash(state, f):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(loop_module.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"step": 1}
    assert os.listdir(tmp_path) == [CHECKPOINT]


def test_cli_parser(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["train", "recipes/tiny.toml", "--out", "runs/x", "--resume", "--max-minutes", "3"]
    )
    assert (args.recipe, args.out, args.resume, args.max_minutes, args.device) == (
        "recipes/tiny.toml", "runs/x", True, 3.0, "cpu"
    )  # fmt: skip
    assert args.func is cmd_train
    args.recipe = str(tmp_path / "missing.toml")
    with pytest.raises(RecipeError):
        cmd_train(args)
