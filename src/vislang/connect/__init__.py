from .merger import PatchMerger
from .projector import LinearProjector, MLPProjector

__all__ = ["LinearProjector", "MLPProjector", "PatchMerger"]
