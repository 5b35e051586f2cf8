"""Answer normalization and extraction, the VQAv2 way, for the visual world's canonical answers.

A model may answer "Yes, there is a red circle." or "There are three objects.": extraction finds
the answer inside the sentence, normalization makes both sides comparable. Everything works on
whole words, so the "no" inside "not", "know" or "none" never reads as the answer "no".
"""

from __future__ import annotations

import re

from vislang.data.real import FASHION_LABELS
from vislang.data.world.palette import COLORS, REGIONS, SHAPES

from .metrics import iou

ARTICLES = {"a", "an", "the"}
NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
).split()
WORD_TO_DIGIT = {word: str(i) for i, word in enumerate(NUMBER_WORDS)}
YES, NO = {"yes", "yeah", "yep", "yup"}, {"no", "nope"}
ZERO_WORDS = {"no", "none", "nothing"}  # "There are no red objects." answers a count with 0

# whole-word contractions first, then suffix rules; apostrophe-less spellings too ("dont")
CONTRACTIONS = {
    "won't": "will not",
    "wont": "will not",
    "can't": "can not",
    "cant": "can not",
    "cannot": "can not",
    "shan't": "shall not",
    "let's": "let us",
    "ain't": "is not",
    "im": "i am",
    "ive": "i have",
    "youre": "you are",
    "thats": "that is",
    "theres": "there is",
    "whats": "what is",
}
for _verb in "do does did is are was were has have had could should would must need".split():
    CONTRACTIONS[f"{_verb}nt"] = f"{_verb} not"
SUFFIXES = (
    ("n't", " not"),
    ("'re", " are"),
    ("'ve", " have"),
    ("'ll", " will"),
    ("'m", " am"),
    ("'d", " would"),
)
SUFFIXES += (("'s", " is"),)  # possessive or "is": either way the noun survives as a word

# question type -> answer type; unknown qtypes fall back on the answer's own shape (answer_type)
YES_NO_QTYPES = {"exist", "more", "left_of", "above", "same_color", "checked"}
NUMBER_QTYPES = {"count_all", "count_shape", "count_color", "count_both", "count_not", "count_moving"}
NUMBER_QTYPES |= {"digit", "total", "bar_value"}
BOX_QTYPES = {"ground", "ground_button"}

# closed answer sets: canonical answer -> extra wordings that mean it
REGION_ALIASES = {
    "top left": ["upper left", "left top"],
    "top": ["top center", "top centre", "top middle", "upper middle", "upper center", "upper"],
    "top right": ["upper right", "right top"],
    "left": ["middle left", "center left", "centre left", "left middle", "left center"],
    "center": ["centre", "middle", "center center"],
    "right": ["middle right", "center right", "centre right", "right middle", "right center"],
    "bottom left": ["lower left", "left bottom"],
    "bottom": ["bottom center", "bottom centre", "bottom middle", "lower middle", "lower center", "lower"],
    "bottom right": ["lower right", "right bottom"],
}
FASHION_ALIASES = {
    "t-shirt": ["tshirt", "tee shirt", "tee"],
    "trouser": ["pants", "jeans"],
    "pullover": ["sweater", "jumper"],
    "ankle boot": ["boot"],
    "bag": ["handbag", "purse"],
    "sneaker": ["trainer"],
}
CANDIDATES: dict[str, dict[str, list[str]]] = {
    "color": {c: [] for c in COLORS},
    "shape": {s: [] for s in SHAPES},
    "size": {"small": ["little", "tiny"], "large": ["big"]},
    "where": {r: REGION_ALIASES.get(r, []) for r in REGIONS},
    "direction": {d: [f"{d}ward", f"{d}wards"] for d in ("left", "right", "up", "down")},
    "fashion": {label: FASHION_ALIASES.get(label, []) for label in FASHION_LABELS},
}

_NUMBER = r"-?\d+(?:\.\d+)?"
_BRACKETED = re.compile(r"[\[(]([^\[\]()]*)[\])]")
_POINT_PAIR = re.compile(
    rf"\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)\s*,?\s*\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)"
)
_BOX_WORD = re.compile(r"\bbox\b", re.IGNORECASE)
_NUMBER_TOKEN = re.compile(rf"^{_NUMBER}$")
_WORD = re.compile(r"\d+(?:\.\d+)?|[^\W_]+")
_LETTER = re.compile(r"[a-z]", re.IGNORECASE)


# ---- normalization --------------------------------------------------------------------------------


def format_box(box: list[int]) -> str:
    return "[" + ", ".join(str(int(v)) for v in box) + "]"


def _box_values(numbers: list[str]) -> list[int]:
    values = [float(v) for v in numbers[:4]]
    # a model answering in 0..1 rather than the spec's 0..1000
    if all(0 <= v <= 1 for v in values) and any("." in v for v in numbers[:4]):
        values = [v * 1000 for v in values]
    return [round(v) for v in values]


def _numeric_box(inside: str) -> bool:
    # "[x1, y1, x2, y2]" holds four numbers too, but letters say it is no box
    return len(re.findall(_NUMBER, inside)) >= 4 and not _LETTER.search(inside)


def parse_box(text: str) -> list[int] | None:
    """The first four numbers in brackets, "(x1, y1), (x2, y2)" points, or after the word "box"."""
    pair = _POINT_PAIR.search(text)
    bracketed = next((m for m in _BRACKETED.finditer(text) if _numeric_box(m.group(1))), None)
    if pair and (bracketed is None or pair.start() < bracketed.start()):
        return _box_values(list(pair.groups()))
    if bracketed:
        return _box_values(re.findall(_NUMBER, bracketed.group(1)))
    after = _BOX_WORD.search(text)
    rest = text[after.end() :] if after else text
    numbers = re.findall(_NUMBER, rest)
    # without the word "box", only a bare list of numbers ("12, 40, 300, 310") reads as a box
    if len(numbers) >= 4 and (after or not _LETTER.search(rest)):
        return _box_values(numbers)
    return None


def _expand_contractions(text: str) -> str:
    words = []
    for word in text.split():
        core = word.strip('.,!?;:"()[]')
        if core in CONTRACTIONS:
            word = word.replace(core, CONTRACTIONS[core])
        else:
            for suffix, expansion in SUFFIXES:
                if core.endswith(suffix):
                    word = word.replace(core, core[: -len(suffix)] + expansion)
                    break
        words.append(word)
    return " ".join(words)


def _normalize_words(text: str) -> list[str]:
    text = _expand_contractions(text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # thousands separators: 1,000 -> 1000
    # words are runs of letters and digits, so punctuation splits them; decimals stay whole: 17.85
    tokens = [WORD_TO_DIGIT.get(w, w) for w in _WORD.findall(text)]
    return [w for w in tokens if w not in ARTICLES]


def normalize(text: str) -> str:
    """Lowercase, contractions expanded, punctuation dropped (decimal points and boxes kept),
    number words as digits, articles removed, single spaces."""
    text = str(text).lower().replace("\u2019", "'").replace("\u2018", "'")
    parts, last = [], 0
    for m in _BRACKETED.finditer(text):
        numbers = re.findall(_NUMBER, m.group(1))
        if len(numbers) == 4 and not _LETTER.search(m.group(1)):
            parts += _normalize_words(text[last : m.start()]) + [format_box(_box_values(numbers))]
            last = m.end()
    return " ".join(parts + _normalize_words(text[last:]))


def words(text: str) -> list[str]:
    return normalize(text).split()


# ---- extraction -----------------------------------------------------------------------------------


def answer_type(qtype: str, answer: str | None = None) -> str:
    """ "yesno", "number", "box", "closed" or "free"; for an unknown qtype, read from the answer."""
    if qtype in YES_NO_QTYPES:
        return "yesno"
    if qtype in NUMBER_QTYPES:
        return "number"
    if qtype in BOX_QTYPES:
        return "box"
    if qtype in CANDIDATES:
        return "closed"
    if answer is not None:
        if normalize(answer) in ("yes", "no"):
            return "yesno"
        if _NUMBER_TOKEN.match(normalize(answer)):
            return "number"
        if re.fullmatch(r"\s*\[[^\]]*\]\s*", answer) and parse_box(answer):
            return "box"
    return "free"


def find_phrase(tokens: list[str], phrase: list[str]) -> list[int]:
    """Start positions of `phrase` as whole words in `tokens`."""
    n = len(phrase)
    return [i for i in range(len(tokens) - n + 1) if n and tokens[i : i + n] == phrase]


def _aliases(candidates) -> dict[tuple[str, ...], str]:
    """Every wording (with naive plurals) of every candidate, as word tuples -> canonical answer."""
    if not isinstance(candidates, dict):
        candidates = {c: [] for c in candidates}
    table = {}
    for canonical, extra in candidates.items():
        for wording in [canonical, *extra]:
            base = tuple(words(wording))
            if not base:
                continue
            table.setdefault(base, canonical)
            for plural in ("s", "es"):
                table.setdefault((*base[:-1], base[-1] + plural), canonical)
    return table


def extract_candidate(prediction: str, candidates) -> str | None:
    """The candidate the sentence mentions: the longest wording, the earliest among equals."""
    tokens, best = words(prediction), None
    for phrase, canonical in _aliases(candidates).items():
        for start in find_phrase(tokens, list(phrase)):
            rank = (-len(phrase), start)
            if best is None or rank < best[0]:
                best = (rank, canonical)
    return best[1] if best else None


def extract_yes_no(prediction: str) -> str | None:
    for token in words(prediction):
        if token in YES:
            return "yes"
        if token in NO:
            return "no"
    return None


def extract_number(prediction: str) -> str | None:
    tokens = words(prediction)
    for token in tokens:
        if _NUMBER_TOKEN.match(token):
            value = float(token)
            return str(int(value)) if value.is_integer() else token
    return "0" if ZERO_WORDS & set(tokens) else None


def extract(prediction: str, qtype: str, candidates=None) -> str | None:
    """The answer inside a (full-sentence) prediction, in canonical form; None when there is none.

    candidates (a list, or a dict canonical -> aliases) overrides the qtype's closed set.
    """
    kind = "closed" if candidates is not None else answer_type(qtype)
    if kind == "yesno":
        return extract_yes_no(prediction)
    if kind == "number":
        return extract_number(prediction)
    if kind == "box":
        box = parse_box(prediction)
        return format_box(box) if box else None
    if kind == "closed":
        return extract_candidate(prediction, CANDIDATES[qtype] if candidates is None else candidates)
    return normalize(prediction) or None


# ---- scoring --------------------------------------------------------------------------------------

# two-word closed answers ("top left", "ankle boot"): a free answer ending in "top" must not match
# a prediction that goes on to say "top left"
PHRASES = {tuple(p) for table in CANDIDATES.values() for p in _aliases(table) if len(p) == 2}


def contains_answer(prediction: str, answer: str) -> bool:
    """Free answers (signs, changes, captions): the normalized answer as whole words in the prediction."""
    pred, ans = words(prediction), words(answer)
    if not ans:  # an answer made of an article alone, like the bar label "a"
        pred, ans = _WORD.findall(prediction.lower()), _WORD.findall(answer.lower())
    for start in find_phrase(pred, ans):
        end = start + len(ans)
        extends_after = end < len(pred) and (ans[-1], pred[end]) in PHRASES
        extends_before = start > 0 and (pred[start - 1], ans[0]) in PHRASES
        if not (extends_after or extends_before):
            return True
    return False


def score(prediction: str, sample_answer: str, qtype: str) -> bool:
    """Is `prediction` right, after extraction, against the canonical answer of a `qtype` question?"""
    prediction, kind = str(prediction), answer_type(qtype, sample_answer)
    if kind == "box":
        pred, truth = parse_box(prediction), parse_box(sample_answer)
        return pred is not None and truth is not None and iou(pred, truth) >= 0.5
    if kind == "number":
        got, want = extract_number(prediction), extract_number(sample_answer)
        return got is not None and want is not None and abs(float(got) - float(want)) < 1e-6
    if kind == "yesno":
        return extract_yes_no(prediction) == normalize(sample_answer)
    if kind == "closed":
        got = extract_candidate(prediction, CANDIDATES[qtype])
        return got is not None and normalize(got) == normalize(sample_answer)
    return contains_answer(prediction, sample_answer)
