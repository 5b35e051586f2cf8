"""The MiniGPT-4-style model (packaged MobileNetV2 -> Q-Former -> one linear layer -> SmolLM2):
images reach the answer only through the query tokens; its recipe trains only the Q-Former and the
projection and resumes exactly; a saved folder reloads to equal logits; the engine decodes a shared
batch exactly as one by one."""

from __future__ import annotations

import copy

import pytest
import torch

import vislang
from minigpt4_tiny import tiny_minigpt4
from vislang.data.world import generate_sample
from vislang.generation.engine import Engine
from vislang.train import load_recipe, parse_recipe, train
from vislang.train.recipe import RecipeError

PARTS = ["qformer", "projection"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_minigpt4()


def user(images, text):
    return [
        {
            "role": "user",
            "content": [*({"type": "image", "image": i} for i in images), {"type": "text", "text": text}],
        }
    ]


def scene(i: int):
    return generate_sample("scene", "test", 0, i)


def recipe(steps: int = 2) -> dict:
    return parse_recipe(
        {
            "model": {"kind": "minigpt4"},
            "data": {"image_size": 64},
            "stage": [
                {
                    "name": "a",
                    "steps": steps,
                    "batch_size": 2,
                    "lr": 1e-3,
                    "train": PARTS,
                    "families": {"scene": 1.0},
                }
            ],
        }
    )


def test_each_image_is_its_query_tokens(tiny):
    s = scene(0)
    ids, inputs = tiny.build_prompt(user(s.images, s.question))
    slots = [i for i, t in enumerate(ids) if t == tiny.image_token_id]
    assert len(slots) == tiny.cfg.num_query_tokens and slots == list(range(slots[0], slots[0] + len(slots)))
    x = torch.tensor([ids])
    with torch.no_grad():
        with_image = tiny(input_ids=x, **inputs).logits
        other = tiny(input_ids=x, **tiny.build_prompt(user(scene(1).images, s.question))[1]).logits
    # text before the image is causal: the image cannot reach it; every position after it moves
    assert torch.equal(with_image[0, : slots[0]], other[0, : slots[0]])
    assert (with_image[0, slots[-1] + 1 :] - other[0, slots[-1] + 1 :]).abs().amax(-1).min() > 1e-4


def test_recipe_parses_and_checks_parts():
    r = load_recipe("recipes/minigpt4.toml")
    assert r.model.kind == "minigpt4" and all(set(s.train) <= set(PARTS) for s in r.stages)
    with pytest.raises(RecipeError, match="projector"):
        parse_recipe(
            {"model": {"kind": "minigpt4"}, "stage": [{"name": "a", "steps": 1, "train": ["projector"]}]}
        )
    with pytest.raises(RecipeError, match="lora_rank"):
        parse_recipe(
            {
                "model": {"kind": "minigpt4", "lora_rank": 4},
                "stage": [{"name": "a", "steps": 1, "train": PARTS}],
            }
        )


def test_training_moves_only_its_parts_and_resumes_exactly(tmp_path):
    fresh = tiny_minigpt4()
    whole = train(recipe(), tmp_path / "whole", model=copy.deepcopy(fresh), progress=False)
    part = train(recipe(), tmp_path / "part", model=copy.deepcopy(fresh), progress=False, max_steps=1)
    assert not part.finished
    rest = train(recipe(), tmp_path / "part", resume=True, model=copy.deepcopy(fresh), progress=False)
    assert rest.finished and len(rest.log) == len(whole.log) == 2
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(rest.log, whole.log)) <= 1e-6
    before, after = fresh.state_dict(), rest.model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(PARTS)
    assert (tmp_path / "part" / "trained" / "minigpt4.safetensors").is_file()


def test_projection_only_stage_leaves_the_qformer_alone(tmp_path):
    fresh = tiny_minigpt4()
    r = recipe()
    r.stages[0].train = ["projection"]
    done = train(r, tmp_path / "p", model=copy.deepcopy(fresh), progress=False)
    before, after = fresh.state_dict(), done.model.state_dict()
    assert {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])} == {"projection"}


def test_saved_folder_reloads_to_equal_logits(tmp_path):
    from vislang.models.minigpt4 import build_minigpt4

    model = build_minigpt4(seed=0).eval()
    model.save_trained(tmp_path / "m")
    again = vislang.load(tmp_path / "m")
    s = scene(2)
    ids, inputs = model.build_prompt(user(s.images, s.question))
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.equal(model(input_ids=x, **inputs).logits, again(input_ids=x, **inputs).logits)


def test_engine_batch_equals_one_by_one_and_reuses_features(tiny):
    convs = [user([scene(i).images[0]] * (i % 3), f"{scene(i).question} {'and ' * i}") for i in range(5)]
    kw = [dict(max_new_tokens=3 + 2 * i, min_new_tokens=3 + 2 * i) for i in range(5)]
    alone = [tiny.chat(c, **k).token_ids for c, k in zip(convs, kw)]
    with Engine(tiny, max_batch=3, max_len=200, max_images=3) as engine:
        handles = [engine.submit(c, **k) for c, k in zip(convs, kw)]
        assert [h.result(60).token_ids for h in handles] == alone
        again = engine.submit(convs[2], **kw[2]).result(60)  # same prompt: its prefix KV is reused
        assert again.token_ids == alone[2] and again.cached["prefix_tokens"] > 0
        # new text before the same images: the prefix differs, the cached query features serve
        moved = [{"role": "user", "content": [{"type": "text", "text": "hello"}, *convs[2][0]["content"]]}]
        got = engine.submit(moved, **kw[2]).result(60)
        assert got.cached == {"image_features": 2, "prefix_tokens": 0}
        assert got.token_ids == tiny.chat(moved, **kw[2]).token_ids
