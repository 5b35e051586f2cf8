"""Training the default model: TOML recipes, LoRA adapters, self-distilled chat turns, a resumable loop.

from vislang.train import load_recipe, train
result = train(load_recipe("recipes/default.toml"), "runs/default")
"""

from .loop import TrainResult, lr_at, train
from .lora import add_lora, merge_lora
from .recipe import Recipe, RecipeError, Stage, load_recipe, parse_recipe

__all__ = [
    "Recipe",
    "RecipeError",
    "Stage",
    "TrainResult",
    "add_lora",
    "load_recipe",
    "lr_at",
    "merge_lora",
    "parse_recipe",
    "train",
]
