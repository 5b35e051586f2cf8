"""Evaluation on the visual world: answer extraction, scoring, metrics and reports.

from vislang.eval import evaluate_world, format_report, score
report = evaluate_world(model, families=("scene", "fashion", "digits"), n=500)
score("There are three objects.", "3", "count_all")  # True
"""

from .metrics import accuracy, accuracy_by, grounding, iou, reasoning_attribution
from .normalize import extract, normalize, parse_box, score
from .world import build_samples, evaluate_samples, evaluate_world, format_report, write_report

__all__ = [
    "accuracy",
    "accuracy_by",
    "build_samples",
    "evaluate_samples",
    "evaluate_world",
    "extract",
    "format_report",
    "grounding",
    "iou",
    "normalize",
    "parse_box",
    "reasoning_attribution",
    "score",
    "write_report",
]
