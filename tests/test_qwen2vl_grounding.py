"""Grounding answers in Qwen2-VL's and Qwen2.5-VL's own box conventions, read into pixel boxes of the
original image."""

import pytest

import vislang
from qwen_tiny import qwen_folder, random_image
from vislang.grounding import answer_boxes, ground, parse_json_boxes, parse_qwen2_boxes


def test_qwen2_boxes_with_and_without_their_special_tokens():
    full = "<|object_ref_start|>the red car<|object_ref_end|><|box_start|>(10,20),(300,400)<|box_end|>"
    assert parse_qwen2_boxes(full) == [("the red car", [10, 20, 300, 400])]
    assert parse_qwen2_boxes("the red car(10, 20), (300, 400) and (1,2),(3,4)") == [
        ("", [10, 20, 300, 400]),
        ("", [1, 2, 3, 4]),
    ]


def test_qwen25_json_boxes_fenced_bare_and_cut_off():
    fenced = '```json\n[{"bbox_2d": [1, 2, 30, 40], "label": "car"}, {"bbox_2d": [5, 6, 7, 8]}]\n```'
    assert parse_json_boxes(fenced) == [("car", [1, 2, 30, 40]), ("", [5, 6, 7, 8])]
    assert parse_json_boxes('{"bbox_2d": [1.5, 2, 3, 4], "label": "x"}') == [("x", [1.5, 2, 3, 4])]
    assert parse_json_boxes('[{"bbox_2d": [1, 2, 30, 40], "label": "car"}, {"bbox_2d": [5') == [
        ("car", [1, 2, 30, 40])
    ]
    assert parse_json_boxes("no box here") == []


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {}
    for v25 in (False, True):
        path = tmp_path_factory.mktemp("ground")
        qwen_folder(path, v25=v25, max_pixels=28 * 28 * 16)
        out[v25] = vislang.load(path)
    return out


def test_qwen2_grid_boxes_scale_to_the_image(models):
    image = random_image(400, 200)
    boxes = answer_boxes(models[False], "(100,250),(500,750)", image)
    assert boxes == [("", [40, 50, 200, 150])]


def test_qwen25_pixel_boxes_scale_from_what_the_model_saw(models):
    model, image = models[True], random_image(400, 200)
    seen_h, seen_w = model.image_transform.resized_size(200, 400)  # smart_resize under max_pixels
    assert (seen_h, seen_w) != (200, 400)
    answer = f'[{{"bbox_2d": [0, 0, {seen_w}, {seen_h // 2}], "label": "top half"}}]'
    assert answer_boxes(model, answer, image) == [("top half", [0, 0, 400, 100])]


def test_ground_asks_in_the_models_convention_and_returns_pixels(models, monkeypatch):
    from vislang.models import Reply

    asked = []

    def chat(messages, max_new_tokens):
        asked.append(messages[0]["content"][1]["text"])
        return Reply("the circle(100,250),(500,750)")

    model = models[False]
    monkeypatch.setattr(model, "chat", chat)
    answer, box = ground(model, random_image(400, 200), "the red circle")
    assert asked == ["Find the red circle and output its bounding box."]
    assert box == [40, 50, 200, 150]
