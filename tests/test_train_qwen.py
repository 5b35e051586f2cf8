"""Training the v1 default model (a Qwen2-VL around the packaged SmolLM2) with the recipe loop: only
the named parts learn, the language model stays SmolLM2 bit for bit, video enters as a video part,
the trained folder reloads as an ordinary Qwen2-VL, and a resumed run repeats the same losses."""

from __future__ import annotations

import copy

import pytest
import torch

import vislang
from vislang.data.world import generate_sample
from vislang.models.default_qwen import build_default
from vislang.train import parse_recipe, train
from vislang.train.loop import StageData
from vislang.train.recipe import RecipeError


def recipe(steps=(2, 1)):
    stage = {"batch_size": 2, "lr": 1e-3, "paraphrase": True}
    return parse_recipe(
        {
            "model": {"kind": "qwen2vl"},
            "data": {"seed": 3, "image_size": 112},
            "stage": [
                {
                    **stage,
                    "name": "align",
                    "steps": steps[0],
                    "train": ["merger"],
                    "families": {"scene": 1.0},
                },
                {
                    **stage,
                    "name": "instruct",
                    "steps": steps[1],
                    "train": ["vision", "merger"],
                    "families": {"scene": 0.5, "video": 0.5},
                },
            ],
        }
    )


@pytest.fixture(scope="module")
def fresh():
    return build_default(seed=0)


def test_recipe_checks_parts_against_the_model_kind():
    with pytest.raises(RecipeError, match="projector"):
        parse_recipe(
            {"model": {"kind": "qwen2vl"}, "stage": [{"name": "a", "steps": 1, "train": ["projector"]}]}
        )
    with pytest.raises(RecipeError, match="lora_rank"):
        parse_recipe({"model": {"kind": "qwen2vl", "lora_rank": 4}, "stage": [{"name": "a", "steps": 1}]})
    with pytest.raises(RecipeError, match="kind"):
        parse_recipe({"model": {"kind": "llava"}, "stage": [{"name": "a", "steps": 1}]})


def test_video_samples_become_video_parts():
    data = StageData(recipe((2, 6)), 1, [])
    kinds = set()
    for i in range(12):
        messages, _ = data(i)
        kinds |= {p["type"] for p in messages[0]["content"]}
        if data.world_sample(i).family == "video":
            assert messages[0]["content"][0]["type"] == "video"
    assert kinds == {"image", "video", "text"}


def test_stages_train_their_parts_and_the_language_model_never_moves(fresh, tmp_path):
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    result = train(recipe(), tmp_path, model=copy.deepcopy(fresh), progress=False, max_steps=2)
    mid = {k: v.clone() for k, v in result.model.state_dict().items()}
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], mid[k])}
    assert changed == {"merger"}, [k for k in before if not torch.equal(before[k], mid[k])][:5]
    result = train(recipe(), tmp_path, resume=True, model=copy.deepcopy(fresh), progress=False)
    assert result.finished and all(torch.isfinite(torch.tensor(r["loss"])) for r in result.log)
    after = result.model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"vision", "merger"}
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("language_model."))

    loaded = vislang.load(tmp_path / "trained")
    image = generate_sample("scene", "test", 0, 2).images[0]
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Hi"}]}
    ]
    ids, inputs = loaded.build_prompt(messages)
    with torch.no_grad():
        ours = result.model.eval()(input_ids=torch.tensor([ids]), **inputs).logits
        theirs = loaded(input_ids=torch.tensor([ids]), **inputs).logits
    assert torch.equal(ours, theirs)


def test_resume_repeats_the_same_losses(fresh, tmp_path):
    whole = train(recipe((3, 1)), tmp_path / "whole", model=copy.deepcopy(fresh), progress=False)
    part = train(recipe((3, 1)), tmp_path / "part", model=copy.deepcopy(fresh), progress=False, max_steps=2)
    assert not part.finished
    rest = train(recipe((3, 1)), tmp_path / "part", resume=True, model=copy.deepcopy(fresh), progress=False)
    losses = [r["loss"] for r in rest.log]
    assert len(losses) == len(whole.log) == 4
    assert max(abs(a - r["loss"]) for a, r in zip(losses, whole.log)) <= 1e-6
