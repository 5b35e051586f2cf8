"""The robustness suite's bookkeeping: bootstrap intervals, paired drops, severity 0 as the clean run,
misses in the gallery, and the CLI end to end on a model that only knows the clean images."""

import hashlib
import json
import math

import numpy as np
import pytest

from vislang.data.world import generate_sample
from vislang.eval.robustness import (
    bootstrap_ci,
    evaluate_robustness,
    format_summary,
    paired_drop_ci,
    shifts_named,
    summary_table,
)


def test_bootstrap_interval_matches_the_normal_approximation():
    correct = [True] * 500 + [False] * 500
    lo, hi = bootstrap_ci(correct, seed=1)
    half = 1.96 * math.sqrt(0.25 / 1000)  # 0.031
    assert lo < 0.5 < hi
    assert abs((hi - lo) / 2 - half) < 0.006
    assert bootstrap_ci([True] * 40) == [1.0, 1.0]
    assert bootstrap_ci([]) is None
    assert bootstrap_ci(correct, seed=1) == [lo, hi]  # seeded


def test_paired_drop_interval_is_narrow_when_the_pairs_agree():
    rng = np.random.default_rng(0)
    clean = rng.random(400) < 0.7
    shifted = clean.copy()
    shifted[:40] = False  # 40 samples lost, and every one of them was right before
    lost = (clean[:40]).sum() / 400
    lo, hi = paired_drop_ci(clean, shifted)
    assert lo <= lost <= hi
    unpaired = 1.96 * math.sqrt(2 * 0.7 * 0.3 / 400)  # an unpaired interval's half width, ~0.063
    assert (hi - lo) / 2 < unpaired / 2


def image_key(image) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


class CleanOnly:
    """Answers right on the clean images it was shown, and nothing on any other pixels."""

    def __init__(self, samples):
        self.known = {}
        for s in samples:
            key = image_key(s.images[0])
            self.known[(key, s.question)] = s.answer
            for p in s.probes:
                self.known[(key, p["question"])] = p["answer"]

    def chat(self, messages, max_new_tokens=24):
        content = messages[-1]["content"]
        image = next(p["image"] for p in content if p["type"] == "image")
        question = next(p["text"] for p in content if p["type"] == "text")
        return self.known.get((image_key(image), question), "")


def test_clean_once_then_each_severity_paired():
    n = 12
    samples = [generate_sample("scene", "test", 0, i) for i in range(n)]
    result = evaluate_robustness(
        {"clean-only": CleanOnly(samples)}, shifts_named("jpeg"), n=n, severities=2, progress=False, misses=5
    )
    (entry,) = result["shifts"]
    curve = entry["results"]["clean-only"]
    assert [r["severity"] for r in curve] == [0, 1, 2]
    assert curve[0]["accuracy"] == 1.0 and curve[0]["drop"] == 0.0
    for point in curve[1:]:  # every shifted image is new to the model
        assert point["accuracy"] == 0.0 and point["drop"] == 1.0
        assert point["n"] == n
    assert sum(q["n"] for q in curve[1]["qtypes"].values()) == n
    assert curve[1]["perception"]["n"] + curve[1]["reasoning"]["n"] == n
    misses = result["misses"]["clean-only"]
    assert len(misses) == 5 and all(m["severity"] == 2 and m["clean_correct"] for m in misses)
    assert max(misses[0]["image"].size) <= 192
    (row,) = summary_table(result)
    assert row["clean"] == 1.0 and row["worst"] == 0.0 and row["drop"] == 1.0
    assert "jpeg" in format_summary(result)


def test_excluded_questions_leave_both_sides_of_the_comparison():
    n = 30
    samples = [generate_sample("scene", "test", 0, i) for i in range(n)]
    result = evaluate_robustness(
        {"clean-only": CleanOnly(samples)}, shifts_named("grayscale"), n=n, severities=1, progress=False
    )
    (entry,) = result["shifts"]
    assert 0 < entry["n"] < n  # colour questions are not asked of a grayscale image
    curve = entry["results"]["clean-only"]
    assert curve[0]["n"] == curve[1]["n"] == entry["n"]
    assert "color" not in curve[1]["qtypes"]


def test_unknown_shift_names_are_refused():
    with pytest.raises(ValueError, match="unknown shifts"):
        shifts_named("jpeg,sepia")


def test_cli_writes_the_report_and_json(tmp_path, monkeypatch, capsys):
    from vislang.cli import main
    from vislang.eval import cli

    n = 6
    samples = [generate_sample("scene", "test", 0, i) for i in range(n)]
    monkeypatch.setattr(cli, "load_models", lambda args: {"clean-only": CleanOnly(samples)})
    report, out = tmp_path / "report.html", tmp_path / "result.json"
    argv = ["eval", "robustness", "--shifts", "jpeg,blur", "--n", str(n), "--severities", "2"]
    assert main([*argv, "--report", str(report), "--json", str(out)]) == 0
    assert "blur" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert [s["name"] for s in saved["shifts"]] == ["jpeg", "blur"]
    assert saved["misses"]["clean-only"][0]["image"].startswith("data:image/png;base64,")
    assert "jpeg" in report.read_text()


def test_engine_runner_answers_as_the_static_batch(tmp_path):
    import vislang
    from tiny import llava_folder
    from vislang.eval.runner import EngineRunner
    from vislang.eval.world import messages_for, score_samples

    llava_folder(tmp_path)
    model = vislang.load(str(tmp_path))
    samples = [generate_sample("scene", "test", 0, i) for i in range(8)]
    conversations = [messages_for(s, s.question) for s in samples]
    static = [str(r) for r in model.chat_batch(conversations, max_new_tokens=6)]
    with EngineRunner(model, max_batch=3) as runner:
        assert runner.chat_batch(conversations, max_new_tokens=6) == static
        budgets = [2, 6, 4, 6, 1, 3, 6, 5]
        mixed = runner.chat_budgets(conversations, budgets)
        # a shorter budget gives a prefix of the answer
        for text, want, budget in zip(mixed, static, budgets):
            assert want.startswith(text)
            assert len(model.tokenizer.encode(text, add_special_tokens=False)) <= budget
        rows, asked = score_samples(runner, samples, max_new_tokens=6, progress=False)
    assert asked >= len(samples) and [r["prediction"] for r in rows[:1]] == [static[0]]
