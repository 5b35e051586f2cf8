"""Evaluation on a user's VQA dataset: loading JSONL / JSON / CSV / parquet / arrow, the field's metrics on
hand-computed cases, clear errors, and evaluate_dataset end to end with a fake model."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from vislang.eval.dataset_eval import evaluate_dataset, infer_metric, row_metric
from vislang.eval.datasets import DatasetError, VqaRow, load_dataset, open_images
from vislang.eval.vqa_metrics import (
    acc_at_iou,
    anls,
    bleu,
    bleu4,
    box_iou,
    caption_metrics,
    caption_tokens,
    cider_d,
    exact_match,
    levenshtein,
    normalize_vqa,
    vqa_accuracy,
)

# ---- VQAv2 accuracy and normalization -------------------------------------------------------------


def humans(k: int, said: str = "2", other: str = "3") -> list[str]:
    return [said] * k + [other] * (10 - k)


# k of 10 humans said it. Leaving out one of the k leaves k-1 votes, one of the others leaves k;
# the score is the mean of min(1, votes / 3) over the ten:
#   k=1: (1*0 + 9*(1/3)) / 10 = 0.3      k=2: (2*(1/3) + 8*(2/3)) / 10 = 0.6
#   k=3: (3*(2/3) + 7*1) / 10 = 0.9      k=4: (4*1 + 6*1) / 10 = 1.0
@pytest.mark.parametrize("k, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy_averages_leave_one_out_subsets(k, expected):
    assert vqa_accuracy("2", humans(k)) == pytest.approx(expected, abs=1e-12)


def test_vqa_accuracy_normalizes_both_sides():
    assert vqa_accuracy("Two.", humans(2)) == pytest.approx(0.6)
    assert vqa_accuracy("two", ["2"] * 10) == 1.0  # the official script would skip normalizing here
    assert vqa_accuracy("a dog", ["dog"]) == 1.0  # one answer: exact match
    assert vqa_accuracy("cat", ["dog"]) == 0.0
    with pytest.raises(ValueError, match="no gold answers"):
        vqa_accuracy("dog", [])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Two", "2"),
        ("the dog.", "dog"),
        ("dont", "don't"),
        ("don't", "don't"),
        ("None", "0"),
        ("Yes, it is!", "yes it is"),  # ", " vanishes; the "!" at the end becomes a space
        ("top-left", "top left"),  # a mark between words separates them
        ("1,000 people", "1000 people"),  # a digit-comma-digit makes every mark vanish
        ("3.5 m.", "3.5 m"),  # a period before a digit stays
        ("An apple", "apple"),
        ("twelve", "twelve"),  # the official number words stop at ten
        ("its", "its"),  # a word of its own, not "it's"
    ],
)
def test_normalize_vqa_golden(text, expected):
    assert normalize_vqa(text) == expected


def test_exact_match_is_normalized_and_takes_the_best_answer():
    assert exact_match("The Dog.", "dog") == 1.0
    assert exact_match("dont know", ["cat", "don't know"]) == 1.0
    assert exact_match("a big dog", ["dog"]) == 0.0


# ---- ANLS ------------------------------------------------------------------------------------------


def test_levenshtein_golden():
    assert levenshtein("kitten", "sitting") == 3  # k->s, e->i, +g
    assert levenshtein("", "abc") == 3
    assert levenshtein("abc", "abc") == 0
    assert levenshtein("flaw", "lawn") == 2


def test_anls_hand_computed():
    assert anls("abcx", ["abcd"]) == pytest.approx(1 - 1 / 4)
    assert anls("kitten", "sitting") == pytest.approx(1 - 3 / 7)  # NL over the longer string
    assert anls("ABCD ", "abcd") == 1.0  # lowercase, spaces trimmed
    assert anls("abcx", ["zzzz", "abcd"]) == pytest.approx(0.75)  # the best gold answer
    # the tau cut-off: NL = 2/4 = 0.5 is not below tau = 0.5, so 0; with tau 0.6 it counts
    assert anls("abxy", ["abcd"]) == 0.0
    assert anls("abxy", ["abcd"], tau=0.6) == pytest.approx(0.5)
    assert anls("abcdefgxyz", ["abcdefghij"]) == pytest.approx(0.7)  # NL = 3/10
    assert anls("", [""]) == 1.0


def test_anls_cut_off_boundary_just_below():
    # d = 3 over 7 characters: NL = 0.4286 < 0.5 keeps 4/7; d = 4 over 7: NL = 0.571 drops to 0
    assert anls("abcdxyz", ["abcdefg"]) == pytest.approx(4 / 7)
    assert anls("abcwxyz", ["abcdefg"]) == 0.0


# ---- boxes -----------------------------------------------------------------------------------------


def test_iou_and_acc_at_iou_on_hand_boxes():
    # [0,0,10,10] vs [0,0,10,20]: intersection 100, union 200 -> 0.5, which counts at 0.5
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 20]) == pytest.approx(0.5)
    assert acc_at_iou("The box is [0, 0, 10, 10].", "[0, 0, 10, 20]") == 1.0
    # [0,0,10,10] vs [5,0,15,10]: intersection 50, union 150 -> 1/3
    assert box_iou("[0, 0, 10, 10]", [5, 0, 15, 10]) == pytest.approx(1 / 3)
    assert acc_at_iou([0, 0, 10, 10], [5, 0, 15, 10]) == 0.0
    assert acc_at_iou([0, 0, 10, 10], [5, 0, 15, 10], threshold=0.3) == 1.0
    assert acc_at_iou("I cannot tell.", "[0, 0, 10, 10]") == 0.0  # no box: a miss
    with pytest.raises(ValueError, match="holds no box"):
        box_iou("[0, 0, 1, 1]", "a dog")
    with pytest.raises(ValueError, match="four numbers|4 numbers|got 3"):
        box_iou([0, 0, 1], [0, 0, 1, 1])


# ---- captions --------------------------------------------------------------------------------------


def test_caption_tokens_lowercase_and_drop_punctuation():
    assert caption_tokens("A man's hat, on-top!") == "a man s hat on top"


def test_bleu_identical_caption_is_one():
    caption = "a red circle above a small blue square"
    assert bleu4([caption], [[caption]]) == pytest.approx(1.0, abs=1e-6)
    assert bleu4(["A red circle, above a small blue square."], [[caption]]) == pytest.approx(1.0, abs=1e-6)


def test_bleu1_hand_computed():
    # candidate "a cat sat on a mat" vs "the cat sat on the mat": clipped unigram matches
    # cat, sat, on, mat = 4 of 6 words; equal lengths, no brevity penalty -> 4/6
    assert bleu(["a cat sat on a mat"], [["the cat sat on the mat"]], max_n=1)[0] == pytest.approx(4 / 6)
    # "cat sat" (2 words) vs a 6-word reference: precision 2/2, brevity penalty exp(1 - 6/2)
    assert bleu(["cat sat"], [["the cat sat on the mat"]], max_n=1)[0] == pytest.approx(math.exp(-2))
    # clipping: "the the the" earns only the reference's two "the" -> 2/3, times exp(1 - 6/3)
    expected = 2 / 3 * math.exp(1 - 6 / 3)
    assert bleu(["the the the"], [["the cat sat on the mat"]], max_n=1)[0] == pytest.approx(expected)


def test_cider_d_needs_a_corpus():
    refs = [["the cat sat on the mat"], ["a dog runs in the park"]]
    # captions equal to their references, n-grams not shared by every image: cosine 1 at every n,
    # no length penalty, times 10
    assert cider_d(["the cat sat on the mat", "a dog runs in the park"], refs) == pytest.approx(10.0)
    assert cider_d(["the cat sat on the mat"], [["the cat sat on the mat"]]) == 0.0  # IDF log(1/1) = 0
    found = caption_metrics(["the cat sat on the mat", "two birds"], refs)
    assert found["cider_rows"][0] == pytest.approx(10.0) and found["cider_rows"][1] == 0.0
    assert found["cider"] == pytest.approx(5.0)  # the corpus CIDEr-D is the mean over captions
    with pytest.raises(ValueError, match="2 predictions for 1"):
        caption_metrics(["a", "b"], [["a"]])


# ---- loading: every format gives the same rows ---------------------------------------------------

COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
ROWS = [  # id, question, answers, image names, qtype
    ("q0", "What colour is the square?", ["red"], ["red.png"], "color"),
    ("q1", "How many circles are there?", humans(2), ["blue.png"], "count"),
    ("q2", "Where is the green square?", ["[10, 10, 50, 50]"], ["green.png"], "ground"),
    ("q3", "Which picture is red?", ["the first", "first"], ["red.png", "blue.png"], "compare"),
]


def png(name: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), COLORS[name.removesuffix(".png")]).save(out, format="PNG")
    return out.getvalue()


def write_images(folder) -> None:
    for name in COLORS:
        (folder / f"{name}.png").write_bytes(png(name))


def single_or_list(values: list[str]):
    return values[0] if len(values) == 1 else values


def write_jsonl(folder, rows=ROWS, name="data.jsonl"):
    write_images(folder)
    with open(folder / name, "w") as f:
        for id, question, answers, images, qtype in rows:
            record = {"id": id, "question": question, "answer": single_or_list(answers)}
            f.write(json.dumps(record | {"image": single_or_list(images), "qtype": qtype}) + "\n")
    return folder / name


def write_csv(folder):
    # other accepted names: "answers", "images" (a JSON list in a cell), "question_type"
    write_images(folder)
    with open(folder / "data.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["question_id", "question", "answers", "images", "question_type"])
        for id, question, answers, images, qtype in ROWS:
            cell = answers[0] if len(answers) == 1 else json.dumps(answers)
            writer.writerow([id, question, cell, json.dumps(images), qtype])
    return folder / "data.csv"


def table():
    """The rows as `datasets` stores them: images embedded as {bytes, path} structs."""
    pa = pytest.importorskip("pyarrow")
    return pa.Table.from_pylist(
        [
            {
                "id": id,
                "query": question,
                "answers": answers,
                "images": [{"bytes": png(n), "path": n} for n in images],
                "question_type": qtype,
            }
            for id, question, answers, images, qtype in ROWS
        ]
    )


def write_parquet(folder):
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(table(), folder / "data.parquet")
    return folder / "data.parquet"


def write_arrow(folder, stream: bool = True):
    pa = pytest.importorskip("pyarrow")
    path = folder / ("stream.arrow" if stream else "file.arrow")
    t = table()
    with (pa.ipc.new_stream if stream else pa.ipc.new_file)(str(path), t.schema) as writer:
        writer.write_table(t, max_chunksize=2)  # two record batches, as a larger file would have
    return path


def as_tuples(rows: list[VqaRow]) -> list[tuple]:
    return [
        (r.id, r.question, r.answers, r.qtype, [np.asarray(im).tolist() for im in open_images(r)])
        for r in rows
    ]


@pytest.mark.parametrize(
    "write", [write_csv, write_parquet, write_arrow, lambda f: write_arrow(f, stream=False)]
)
def test_every_format_loads_the_same_rows(tmp_path, write):
    expected = as_tuples(load_dataset(write_jsonl(tmp_path)))
    assert [t[:4] for t in expected] == [(i, q, a, t) for i, q, a, _, t in ROWS]
    red = [[list(COLORS["red"])] * 16] * 12
    assert expected[0][4] == [red] and len(expected[3][4]) == 2
    assert as_tuples(load_dataset(write(tmp_path))) == expected


def test_json_list_folder_and_limit(tmp_path):
    jsonl = write_jsonl(tmp_path)
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    (tmp_path / "data.json").write_text(json.dumps(records))
    assert as_tuples(load_dataset(tmp_path / "data.json")) == as_tuples(load_dataset(jsonl))
    assert [r.id for r in load_dataset(jsonl, limit=2)] == ["q0", "q1"]
    shards = tmp_path / "shards"
    shards.mkdir()
    write_parquet(shards)
    assert [r.id for r in load_dataset(shards)] == ["q0", "q1", "q2", "q3"]


def test_box_answer_as_numbers_and_vqav2_answer_dicts(tmp_path):
    write_images(tmp_path)
    records = [
        {"question": "Where?", "answer": [10, 20, 30.5, 40], "image": "red.png"},
        {"question": "What?", "answers": [{"answer": "dog", "answer_confidence": "yes"}], "image": "red.png"},
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    rows = load_dataset(path)
    assert rows[0].answers == ["[10, 20, 30.5, 40]"] and rows[1].answers == ["dog"]
    assert [r.id for r in rows] == ["0", "1"]  # no id column: the row number


# ---- clear errors ----------------------------------------------------------------------------------


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dataset at"):
        load_dataset(tmp_path / "absent.jsonl")
    (tmp_path / "data.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"unknown dataset format '\.txt'.*\.jsonl"):
        load_dataset(tmp_path / "data.txt")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    pytest.importorskip("pyarrow")
    with pytest.raises(DatasetError, match="not a parquet file"):
        load_dataset(tmp_path / "bad.parquet")


def test_missing_columns_are_named(tmp_path):
    write_images(tmp_path)
    (tmp_path / "a.jsonl").write_text(json.dumps({"question": "Q?", "img": "red.png"}) + "\n")
    with pytest.raises(DatasetError, match=r"line 1.*column\(s\) answer, image.*answers \| answer"):
        load_dataset(tmp_path / "a.jsonl")
    (tmp_path / "a.csv").write_text("q,answer,image\nWhat?,red,red.png\n")
    with pytest.raises(
        DatasetError, match=r"header lacks the column\(s\) question .*columns are: q, answer, image"
    ):
        load_dataset(tmp_path / "a.csv")


def test_unreadable_images_name_the_row(tmp_path):
    path = write_jsonl(tmp_path)
    (tmp_path / "broken.png").write_text("not an image")
    lines = path.read_text().splitlines()
    lines[2] = json.dumps({"question": "Q?", "answer": "a", "image": "broken.png"})
    path.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match="line 3 of data.jsonl: unreadable image"):
        load_dataset(path)
    lines[2] = json.dumps({"question": "Q?", "answer": "a", "image": "absent.png"})
    path.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match="line 3 of data.jsonl: unreadable image.*absent.png"):
        load_dataset(path)
    lines[1] = "{not json"
    path.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match="line 2 of data.jsonl is not JSON"):
        load_dataset(path)


def test_unreadable_embedded_image_names_the_row(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    t = table().to_pylist()
    t[1]["images"] = [{"bytes": b"\x89PNG garbage", "path": None}]
    pq.write_table(pa.Table.from_pylist(t), tmp_path / "d.parquet")
    with pytest.raises(DatasetError, match="row 2 of d.parquet: unreadable image"):
        load_dataset(tmp_path / "d.parquet")


def test_bad_metric_is_refused(tmp_path):
    path = write_jsonl(tmp_path)
    with pytest.raises(ValueError, match="metric is 'bleu'; use one of vqa, exact"):
        evaluate_dataset(FakeModel({}), path, metric="bleu", progress=False)
    row = VqaRow(id="0", question="Q?", answers=["a"], images=[], metric="f1", where="row 1 of x.csv")
    with pytest.raises(ValueError, match="row 1 of x.csv: the metric column is 'f1'"):
        row_metric(row)


# ---- metric choice and evaluate_dataset end to end -------------------------------------------------


def test_infer_metric():
    def row(answers, qtype=None):
        return VqaRow(id="0", question="Q?", answers=answers, images=[], qtype=qtype)

    assert infer_metric(row(humans(3))) == "vqa"
    assert infer_metric(row(["[1, 2, 30, 40]"])) == "iou"
    assert infer_metric(row(["red"], qtype="caption")) == "caption"
    assert infer_metric(row(["a red circle above a blue square"])) == "caption"
    assert infer_metric(row(["red", "crimson"])) == "exact"
    assert row_metric(row(["red"]), metric="anls") == "anls"
    assert row_metric(VqaRow("0", "Q?", ["red"], [], metric="vqa"), metric="anls") == "vqa"


class FakeModel:
    """Answers from a lookup by question text; records what it was asked and how."""

    def __init__(self, replies: dict[str, str]):
        self.replies, self.asked = replies, []

    def chat_batch(self, conversations, max_new_tokens=32):
        out = []
        for messages in conversations:
            content = messages[0]["content"]
            images = [part["image"] for part in content if part["type"] == "image"]
            assert all(isinstance(im, Image.Image) for im in images)
            text = content[-1]["text"]
            self.asked.append((text, len(images), max_new_tokens, len(conversations)))
            out.append(self.replies[text.split("\n")[0]])
        return out


def test_evaluate_dataset_end_to_end(tmp_path):
    write_images(tmp_path)
    records = [
        {"id": "a", "question": "What colour?", "answer": "red", "image": "red.png", "qtype": "color"},
        {"id": "b", "question": "How many?", "answer": humans(2), "image": "blue.png", "qtype": "count"},
        {
            "id": "c",
            "question": "Where?",
            "answer": "[10, 10, 50, 50]",
            "image": "green.png",
            "qtype": "ground",
        },
        {"id": "d", "question": "Total?", "answer": "invoice", "image": "red.png", "metric": "anls"},
        {"id": "e", "question": "Describe 1.", "answer": ["the cat sat on the mat"], "image": "red.png"},
        {"id": "f", "question": "Describe 2.", "answer": "a dog runs in the park", "image": "blue.png"},
    ]
    for r in records[4:]:
        r["qtype"] = "caption"
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    model = FakeModel(
        {
            "What colour?": "Red.",  # exact: 1
            "How many?": "two",  # vqa, 2 of 10 humans: 0.6
            "Where?": "[30, 10, 70, 50]",  # IoU 800 / 2400 = 1/3: 0
            "Total?": "invoise",  # ANLS 1 - 1/7
            "Describe 1.": "The cat sat on the mat.",  # CIDEr-D 10
            "Describe 2.": "two birds",  # CIDEr-D 0
        }
    )
    report = evaluate_dataset(
        model, path, batch_size=4, progress=False, instruction="Answer briefly.", misses=2
    )

    scores = [r["score"] for r in report["rows"]]
    assert scores == pytest.approx([1.0, 0.6, 0.0, 6 / 7, 10.0, 0.0])
    assert [r["metric"] for r in report["rows"]] == ["exact", "vqa", "iou", "anls", "caption", "caption"]
    assert report["rows"][2]["iou"] == pytest.approx(1 / 3)
    assert report["overall"] == {"n": 4, "score": pytest.approx((1.0 + 0.6 + 0.0 + 6 / 7) / 4)}
    assert report["metrics"]["iou"]["acc@0.5"] == 0.0 and report["metrics"]["vqa"]["score"] == pytest.approx(
        0.6
    )
    caption = report["metrics"]["caption"]
    assert (
        caption["n"] == 2
        and caption["cider"] == pytest.approx(5.0)
        and caption["score"] == pytest.approx(5.0)
    )
    assert 0 < caption["bleu4"] < 1
    assert list(report["groups"]) == ["color", "count", "ground", "anls", "caption"]
    assert report["groups"]["count"] == {"metric": "vqa", "n": 1, "score": pytest.approx(0.6)}

    # the first two rows under full marks, each with its image for a report
    assert [m["id"] for m in report["misses"]] == ["b", "c"]
    assert np.asarray(report["misses"][1]["image"])[0, 0].tolist() == list(COLORS["green"])

    # every question asked once with its image and the instruction; captions get a longer budget,
    # batches hold one budget and at most batch_size questions
    asked = {text: (n, budget, batch) for text, n, budget, batch in model.asked}
    assert len(model.asked) == 6 and asked["What colour?\nAnswer briefly."][:2] == (1, 32)
    assert asked["Describe 1.\nAnswer briefly."][1] > 32
    assert max(batch for *_, batch in model.asked) <= 4
    assert report["config"]["rows"] == 6 and report["config"]["instruction"] == "Answer briefly."


def test_evaluate_dataset_metric_argument_and_chat_only_model(tmp_path):
    path = write_jsonl(tmp_path)

    class ChatOnly:
        def chat(self, messages, max_new_tokens=32):
            return "red"

    report = evaluate_dataset(ChatOnly(), path, metric="anls", progress=False)
    # every row scored by ANLS against its best answer: "red" vs "red" 1; vs "2" or "3": NL 3/3;
    # vs the box text and "first" / "the first": NL over 0.5 -> 0
    assert [r["score"] for r in report["rows"]] == [1.0, 0.0, 0.0, 0.0]
    assert report["overall"]["score"] == 0.25 and set(report["metrics"]) == {"anls"}
