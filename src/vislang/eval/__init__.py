"""Evaluation: the visual world, its robustness under shifts, hallucination (POPE), any local dataset,
any model (local or an OpenAI-compatible endpoint), and one HTML report.

from vislang.eval import evaluate_world, format_report, score
report = evaluate_world(model, families=("scene", "fashion", "digits"), n=500)
score("There are three objects.", "3", "count_all")  # True

from vislang.eval import evaluate_robustness, shifts_named, write_html
result = evaluate_robustness({"default": model}, shifts_named("jpeg,blur,mirror"), n=500, pope_images=100)
write_html(result, "out/report.html")
"""

from .metrics import accuracy, accuracy_by, grounding, iou, reasoning_attribution
from .normalize import extract, normalize, parse_box, score
from .world import build_samples, evaluate_samples, evaluate_world, format_report, score_samples, write_report


def __getattr__(name: str):
    # the suites below pull in matplotlib, pyarrow, httpx: loaded on first use only
    lazy = {
        "evaluate_robustness": "robustness",
        "shifts_named": "robustness",
        "evaluate_pope": "pope",
        "evaluate_dataset": "dataset_eval",
        "load_dataset": "datasets",
        "vqa_accuracy": "vqa_metrics",
        "anls": "vqa_metrics",
        "caption_metrics": "vqa_metrics",
        "EndpointModel": "endpoint",
        "write_html": "html_report",
        "render_html": "html_report",
        "to_json_safe": "html_report",
    }
    if name not in lazy:
        raise AttributeError(f"module 'vislang.eval' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{lazy[name]}", __name__), name)


__all__ = [
    "EndpointModel",
    "accuracy",
    "accuracy_by",
    "anls",
    "build_samples",
    "caption_metrics",
    "evaluate_dataset",
    "evaluate_pope",
    "evaluate_robustness",
    "evaluate_samples",
    "evaluate_world",
    "extract",
    "format_report",
    "grounding",
    "iou",
    "load_dataset",
    "normalize",
    "parse_box",
    "reasoning_attribution",
    "render_html",
    "score",
    "score_samples",
    "shifts_named",
    "to_json_safe",
    "vqa_accuracy",
    "write_html",
    "write_report",
]
