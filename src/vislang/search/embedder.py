"""The model that embeds: any dual encoder with embed(images=..., texts=...), named by path or name."""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError, VislangError

DEFAULT_MODEL = "retrieval"  # vislang's own retrieval model, where vislang.load knows the name


def model_name(spec: str) -> str:
    """How the manifest names a model: an absolute folder path, or the name as given."""
    return str(Path(spec).resolve()) if Path(spec).exists() else spec


def load_embedder(spec: str):
    """vislang.load(spec), checked to be a dual encoder."""
    import vislang

    try:
        model = vislang.load(spec)
    except CheckpointError as e:
        if spec == DEFAULT_MODEL:
            raise VislangError(
                f"the {DEFAULT_MODEL!r} model is not available here ({e}); "
                "pass --model with a dual-encoder checkpoint folder (e.g. CLIP)"
            ) from e
        raise
    if not callable(getattr(model, "embed", None)):
        raise VislangError(
            f"{spec}: {type(model).__name__} does not embed images and texts; "
            "search needs a dual encoder (CLIP, SigLIP, vislang's retrieval model)"
        )
    return model
