"""The field's VQA metrics: VQAv2 accuracy, exact match, ANLS, Acc@IoU, and BLEU / CIDEr-D for captions.

    vqa_accuracy("Two", ["2"] * 3 + ["3"] * 7)       # 0.9: 3 of 10 humans said it
    anls("the cat", ["the bat"])                     # 1 - 1/7
    acc_at_iou("[0, 0, 10, 10]", "[0, 0, 10, 20]")   # 1.0 (IoU 0.5)
    caption_metrics(["a red circle"], [["a red circle", "one red disc"]])

Each score is of one prediction against its gold answers (a string, or a list of alternatives), except
the caption metrics, which are corpus-level: CIDEr-D weighs n-grams by how rare they are across the
whole set of references, so a caption has no CIDEr of its own outside a corpus.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from .metrics import iou
from .normalize import parse_box

Answers = str | Sequence[str]

# ---- VQAv2 normalization ---------------------------------------------------------------------------
# The rules of the official VQAv2 evaluation, written out here: punctuation, periods, number words
# zero..ten (and "none") as digits, articles dropped, apostrophe-less contractions given their apostrophe.

VQA_PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'  # not "'", ":", "$", "%": the official list leaves them in
VQA_NUMBERS = {
    w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())
}
VQA_NUMBERS["none"] = "0"
VQA_ARTICLES = {"a", "an", "the"}
_APOSTROPHE_FORMS = (
    "ain't aren't can't couldn't couldn't've could've didn't doesn't don't hadn't hadn't've hasn't "
    "haven't he'd he'd've he's how'd how'll how's i'd've i'm i've isn't it'd it'd've it'll ma'am "
    "mightn't mightn't've might've mustn't must've needn't not've o'clock oughtn't shan't she'd've "
    "she's shouldn't shouldn't've should've somebody'd somebody'd've somebody'll somebody's someone'd "
    "someone'd've someone'll someone's something'd something'd've something'll that's there'd "
    "there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've we've "
    "weren't what'll what're what's what've when's where'd where's where've who'd who'd've who'll "
    "who's who've why'll why're why's won't wouldn't wouldn't've would've y'all y'all'll y'all'd've "
    "you'd you'd've you'll you're you've"
).split()
# "dont" -> "don't"; spellings that are words of their own ("its", "well", "were", "shell") are absent
VQA_CONTRACTIONS = {form.replace("'", ""): form for form in _APOSTROPHE_FORMS}
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD = re.compile(r"\.(?!\d)")  # a period not before a digit: "dog." loses it, "3.5" keeps it


def _vqa_punctuation(text: str) -> str:
    # A mark beside a space ("yes, it is") or in a number ("1,000") joins its neighbours by vanishing;
    # a mark between words ("top-left") separates them.
    in_number = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in VQA_PUNCTUATION:
        vanish = in_number or f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if vanish else " ")
    return _PERIOD.sub("", out)


def normalize_vqa(text: str) -> str:
    """The official VQAv2 answer normalization: punctuation as above, lowercase, number words zero..ten
    as digits, articles removed, contractions fixed ("dont" -> "don't"), single spaces."""
    words = _vqa_punctuation(str(text).replace("\n", " ").replace("\t", " ")).lower().split()
    words = [VQA_NUMBERS.get(w, w) for w in words]
    return " ".join(VQA_CONTRACTIONS.get(w, w) for w in words if w not in VQA_ARTICLES)


def _as_list(answers: Answers) -> list[str]:
    answers = [answers] if isinstance(answers, str) else [str(a) for a in answers]
    if not answers:
        raise ValueError("no gold answers to score against")
    return answers


def vqa_accuracy(prediction: str, answers: Answers) -> float:
    """VQAv2 accuracy: a prediction is fully right when at least 3 humans gave it, min(1, #humans / 3).

    As the official evaluator does, the rule is averaged over the subsets that leave one human out
    (10 choose 9 for VQAv2's 10 answers), after normalize_vqa on both sides. With k of 10 humans
    agreeing: k=1 -> 0.3, k=2 -> 0.6, k=3 -> 0.9, k>=4 -> 1. A single answer has no subset to leave
    out and is scored by exact match. (The official script skips normalization when all ten humans
    agree; here it always runs, so "Two" matches ten humans saying "2".)
    """
    answers = _as_list(answers)
    said = [normalize_vqa(a) == normalize_vqa(prediction) for a in answers]
    if len(said) == 1:
        return float(said[0])
    votes = sum(said)
    return sum(min(1.0, (votes - s) / 3) for s in said) / len(said)


def exact_match(prediction: str, answers: Answers) -> float:
    """1.0 if the prediction equals any gold answer after normalize_vqa, else 0.0."""
    pred = normalize_vqa(prediction)
    return float(any(normalize_vqa(a) == pred for a in _as_list(answers)))


# ---- ANLS (DocVQA, ST-VQA) -------------------------------------------------------------------------


def levenshtein(a: str, b: str) -> int:
    """Edit distance: the fewest single-character insertions, deletions and substitutions from a to b."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _anls_text(text: str) -> str:
    return " ".join(str(text).lower().split())  # DocVQA's normalization: lowercase, single spaces


def anls(prediction: str, answers: Answers, tau: float = 0.5) -> float:
    """Average Normalized Levenshtein Similarity, per question: the best over gold answers of
    1 - NL if NL < tau else 0, with NL = edit distance / length of the longer string (after lowercasing
    and collapsing spaces). NL exactly tau scores 0. Averaging over questions gives the dataset's ANLS."""
    pred, best = _anls_text(prediction), 0.0
    for answer in _as_list(answers):
        gold = _anls_text(answer)
        longer = max(len(pred), len(gold))
        nl = levenshtein(pred, gold) / longer if longer else 0.0
        best = max(best, 1.0 - nl if nl < tau else 0.0)
    return best


# ---- boxes -----------------------------------------------------------------------------------------

Box = str | Sequence[float]


def _box(value: Box | None) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_box(value)
    values = [float(v) for v in value]
    if len(values) != 4:
        raise ValueError(f"a box is [x1, y1, x2, y2], got {len(values)} numbers")
    return values


def box_iou(prediction: Box | None, gold: Box) -> float:
    """IoU of two boxes, each a text parse_box reads or four numbers; 0 when the prediction has none."""
    pred, truth = _box(prediction), _box(gold)
    if truth is None:
        raise ValueError(f"the gold answer {gold!r} holds no box")
    return iou(pred, truth) if pred is not None else 0.0


def acc_at_iou(pred_box: Box | None, gold_box: Box, threshold: float = 0.5) -> float:
    """Acc@IoU for one box: 1.0 when IoU(pred, gold) >= threshold (0.5 in RefCOCO), else 0.0."""
    return float(box_iou(pred_box, gold_box) >= threshold)


# ---- captions (pycocoevalcap) ----------------------------------------------------------------------

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def caption_tokens(text: str) -> str:
    """Our stand-in for the COCO PTB tokenizer (which needs Java): lowercase, every punctuation mark
    replaced by a space, words split on whitespace; returned space-joined, as pycocoevalcap expects."""
    return " ".join(_PUNCTUATION.sub(" ", str(text).lower()).split())


def _coco_inputs(predictions: Sequence[str], references: Sequence[Answers]) -> tuple[dict, dict]:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} sets of references")
    if not predictions:
        raise ValueError("no captions to score")
    gts = {i: [caption_tokens(r) for r in _as_list(refs)] for i, refs in enumerate(references)}
    res = {i: [caption_tokens(p)] for i, p in enumerate(predictions)}
    return gts, res


def _pycocoevalcap():
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError as e:
        raise ImportError("caption metrics need pycocoevalcap: pip install pycocoevalcap") from e
    return Bleu, Cider


def caption_metrics(predictions: Sequence[str], references: Sequence[Answers]) -> dict:
    """Corpus BLEU-1..4 and CIDEr-D of captions against their references, with per-caption values.

    BLEU-n: the geometric mean of clipped 1..n-gram precisions over the corpus, times the brevity
    penalty exp(1 - r/c) when the candidates are shorter (c) than the closest references (r).
    CIDEr-D: the mean over n = 1..4 of the cosine between TF-IDF n-gram vectors of candidate and each
    reference, with a Gaussian length penalty and clipped counts, times 10; IDF comes from the
    references of the whole corpus, so an n-gram every reference shares weighs nothing.
    """
    Bleu, Cider = _pycocoevalcap()
    gts, res = _coco_inputs(predictions, references)
    bleus, bleu_rows = Bleu(4).compute_score(gts, res, verbose=0)
    cider, cider_rows = Cider().compute_score(gts, res)
    return {
        "bleu": [float(b) for b in bleus],
        "bleu4": float(bleus[3]),
        "cider": float(cider),
        "bleu4_rows": [float(b) for b in bleu_rows[3]],
        "cider_rows": [float(c) for c in cider_rows],
    }


def bleu(predictions: Sequence[str], references: Sequence[Answers], max_n: int = 4) -> list[float]:
    """Corpus BLEU-1..max_n (max_n <= 4); see caption_metrics."""
    if not 1 <= max_n <= 4:
        raise ValueError(f"max_n must be 1..4, got {max_n}")
    Bleu, _ = _pycocoevalcap()
    gts, res = _coco_inputs(predictions, references)
    return [float(b) for b in Bleu(max_n).compute_score(gts, res, verbose=0)[0]]


def bleu4(predictions: Sequence[str], references: Sequence[Answers]) -> float:
    """Corpus BLEU-4; see caption_metrics."""
    return bleu(predictions, references)[3]


def cider_d(predictions: Sequence[str], references: Sequence[Answers]) -> float:
    """Corpus CIDEr-D; see caption_metrics. One caption alone scores 0: with a corpus of one, every
    n-gram is in every document and its IDF is log(1) = 0."""
    _, Cider = _pycocoevalcap()
    return float(Cider().compute_score(*_coco_inputs(predictions, references))[0])
