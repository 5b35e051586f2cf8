"""A training recipe: one TOML file that says what model to build, on what data, in which stages.

    checkpoint_minutes = 5

    [model]
    merge = 2                      # k x k grid cells per image token
    lora_rank = 0                  # 0: no LoRA adapters
    lora_alpha = 16.0
    lora_targets = ["q_proj", "v_proj"]
    init = "runs/align/trained"    # optional: trained weights to start from (relative to the cwd)

    [data]
    seed = 0
    image_size = 224               # the world's canvas side in pixels

    [[stage]]
    name = "align"
    steps = 1000
    batch_size = 16
    lr = 1e-3
    train = ["projector"]
    families = { scene = 0.8, fashion = 0.1, digits = 0.1, chat = 0.0 }
    qtypes = { scene = ["caption"] }   # optional, per family

Unknown keys are errors rather than silently ignored: a typo in a recipe costs hours of training.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path

from ..data.interleaved import INTERLEAVED
from ..data.world import FAMILIES
from ..errors import VislangError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

CHAT = "chat"  # the pseudo-family of text-only turns (see chat_data.py)
PSEUDO_FAMILIES = (CHAT, INTERLEAVED)  # built from world samples (see data/interleaved.py) or none
# what each model kind can train: v0 (MobileNetV2 + projector) and v1 (a Qwen2-VL whose language
# model stays SmolLM2: its tower and merger train), flamingo (frozen towers: resampler and gated
# cross-attention blocks train), minigpt4 (frozen towers: the Q-Former and its projection train)
TRAINABLE = {
    "mobilenet": ("projector", "lora"),
    "qwen2vl": ("vision", "merger"),
    "flamingo": ("resampler", "xattn"),
    "minigpt4": ("qformer", "projection"),
}
TRAINABLE_PARTS = tuple(dict.fromkeys(p for parts in TRAINABLE.values() for p in parts))
# families whose generators keep their question types somewhere other than a module-level QTYPES
REAL_QTYPES = {"fashion": ("fashion",), "digits": ("digit",)}


class RecipeError(VislangError, ValueError):
    """A recipe that cannot be trained: unknown keys, families, parts, or values out of range."""


@dataclass
class ModelSpec:
    kind: str = "mobilenet"  # or "qwen2vl", "flamingo", "minigpt4"
    tower: str | None = None  # qwen2vl: a stage-1 tower (safetensors) to start from
    merge: int = 2
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    init: str | None = None


@dataclass
class DataSpec:
    seed: int = 0
    image_size: int = 224


@dataclass
class Stage:
    name: str
    steps: int
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr: float = 0.0
    warmup_steps: int = 0
    weight_decay: float = 0.0
    train: list[str] = field(default_factory=lambda: ["projector"])
    families: dict[str, float] = field(default_factory=lambda: {"scene": 1.0})
    qtypes: dict[str, list[str]] = field(default_factory=dict)
    paraphrase: bool = False

    @property
    def samples_per_step(self) -> int:
        return self.batch_size * self.grad_accum


@dataclass
class Recipe:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    stages: list[Stage] = field(default_factory=list)
    checkpoint_minutes: float = 5.0

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, table: dict, where: str):
    """cls(**table) with every key checked against the dataclass fields and its type."""
    if not isinstance(table, dict):
        raise RecipeError(f"{where} must be a table, got {table!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise RecipeError(f"unknown keys in {where}: {', '.join(unknown)}; known: {', '.join(known)}")
    for key, value in table.items():
        _check_type(value, known[key].type, f"{where}.{key}")
    try:
        return cls(**table)
    except TypeError as e:  # a missing required field
        raise RecipeError(f"{where}: {e}") from None


def _check_type(value, annotation: str, where: str) -> None:
    # annotations are strings (from __future__ import annotations); only the shapes recipes use
    expected = {
        "int": (int,),
        "float": (int, float),
        "bool": (bool,),
        "str": (str,),
        "str | None": (str,),
        "list[str]": (list,),
        "dict[str, float]": (dict,),
        "dict[str, list[str]]": (dict,),
    }[annotation]
    bad_bool = isinstance(value, bool) and bool not in expected
    if not isinstance(value, expected) or bad_bool:
        raise RecipeError(f"{where} must be {annotation}, got {value!r}")
    if annotation == "list[str]" and not all(isinstance(v, str) for v in value):
        raise RecipeError(f"{where} must be a list of strings, got {value!r}")


def known_qtypes(family: str) -> tuple[str, ...] | None:
    """The question types a family can ask, or None when it does not say."""
    if family in REAL_QTYPES:
        return REAL_QTYPES[family]
    module = importlib.import_module(FAMILIES[family].split(":")[0])
    qtypes = getattr(module, "QTYPES", None)
    return tuple(qtypes) if qtypes is not None else None


def validate_stage(stage: Stage, where: str, kind: str = "mobilenet") -> None:
    for key in ("steps", "batch_size", "grad_accum"):
        if getattr(stage, key) < 1:
            raise RecipeError(f"{where}.{key} must be >= 1, got {getattr(stage, key)}")
    if not 0 <= stage.warmup_steps <= stage.steps:
        raise RecipeError(f"{where}.warmup_steps must be in [0, steps], got {stage.warmup_steps}")
    if not 0 <= stage.min_lr <= stage.lr or stage.lr <= 0:
        raise RecipeError(f"{where}: need 0 <= min_lr <= lr and lr > 0, got {stage.min_lr}, {stage.lr}")
    if stage.weight_decay < 0:
        raise RecipeError(f"{where}.weight_decay must be >= 0")
    bad = [p for p in stage.train if p not in TRAINABLE[kind]]
    if bad or not stage.train:
        raise RecipeError(f"{where}.train must list parts of {TRAINABLE[kind]} ({kind}), got {stage.train}")
    unknown = [f for f in stage.families if f not in FAMILIES and f not in PSEUDO_FAMILIES]
    if unknown:
        families = ", ".join([*FAMILIES, *PSEUDO_FAMILIES])
        raise RecipeError(f"{where}.families: unknown family {unknown[0]!r}; families: {families}")
    weights = list(stage.families.values())
    if any(not isinstance(w, int | float) or isinstance(w, bool) or w < 0 for w in weights):
        raise RecipeError(f"{where}.families weights must be numbers >= 0, got {stage.families}")
    if sum(weights) <= 0:
        raise RecipeError(f"{where}.families needs a positive weight, got {stage.families}")
    world = sum(w for f, w in stage.families.items() if f not in PSEUDO_FAMILIES)
    for pseudo in PSEUDO_FAMILIES:
        if stage.families.get(pseudo, 0) > 0 and world <= 0:
            raise RecipeError(f"{where}.families: {pseudo} turns need a world family for their images")
    for family, qtypes in stage.qtypes.items():
        if family not in stage.families or family in PSEUDO_FAMILIES:
            raise RecipeError(f"{where}.qtypes: {family!r} is not one of this stage's world families")
        _check_type(qtypes, "list[str]", f"{where}.qtypes.{family}")
        known = known_qtypes(family)
        unknown = [q for q in qtypes if known is not None and q not in known]
        if unknown or not qtypes:
            asks = ", ".join(known or ())
            raise RecipeError(f"{where}.qtypes.{family}: unknown {unknown or 'empty list'}; it asks: {asks}")


def parse_recipe(table: dict) -> Recipe:
    unknown = sorted(set(table) - {"model", "data", "stage", "checkpoint_minutes"})
    if unknown:
        raise RecipeError(
            f"unknown keys at the top level: {', '.join(unknown)}; known: model, data, stage, "
            "checkpoint_minutes"
        )
    stages = table.get("stage")
    if not stages or not isinstance(stages, list):
        raise RecipeError("a recipe needs at least one [[stage]]")
    minutes = table.get("checkpoint_minutes", 5.0)
    _check_type(minutes, "float", "checkpoint_minutes")
    recipe = Recipe(
        model=_build(ModelSpec, table.get("model", {}), "[model]"),
        data=_build(DataSpec, table.get("data", {}), "[data]"),
        stages=[_build(Stage, s, f"stage {i}") for i, s in enumerate(stages)],
        checkpoint_minutes=float(minutes),
    )
    model, data = recipe.model, recipe.data

    if model.kind not in TRAINABLE:
        raise RecipeError(f"[model].kind must be one of {', '.join(TRAINABLE)}, got {model.kind!r}")
    if model.kind == "qwen2vl" and model.lora_rank:
        raise RecipeError("[model] qwen2vl keeps its language model exactly SmolLM2: lora_rank must be 0")
    if model.kind in ("flamingo", "minigpt4") and model.lora_rank:
        raise RecipeError(
            f"[model] {model.kind} keeps its language model exactly SmolLM2: lora_rank must be 0"
        )
    if model.tower is not None and model.kind != "qwen2vl":
        raise RecipeError("[model].tower is a qwen2vl setting")
    if model.merge < 1 or model.lora_rank < 0:
        raise RecipeError(f"[model] needs merge >= 1 and lora_rank >= 0, got {model}")
    if model.lora_rank and not model.lora_targets:
        raise RecipeError("[model].lora_targets is empty: name the linear layers to adapt (q_proj, ...)")
    if not 64 <= data.image_size <= 1024 or data.seed < 0:
        raise RecipeError(f"[data] needs image_size in [64, 1024] and seed >= 0, got {data}")
    if recipe.checkpoint_minutes <= 0:
        raise RecipeError("checkpoint_minutes must be > 0")
    names = [s.name for s in recipe.stages]
    if len(set(names)) != len(names):
        raise RecipeError(f"stage names must be unique, got {names}")
    for i, stage in enumerate(recipe.stages):
        where = f"stage {i} ({stage.name})"
        validate_stage(stage, where, model.kind)
        if "lora" in stage.train and model.lora_rank == 0:
            raise RecipeError(f"{where} trains 'lora' but [model].lora_rank is 0")
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"no recipe at {path}")
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path} is not valid TOML: {e}") from None
    try:
        return parse_recipe(table)
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
