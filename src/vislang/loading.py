"""vislang.load: a checkpoint folder in, a ready model out, chosen by config.json's model_type."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .checkpoints import read_config
from .errors import UnsupportedModelError

log = logging.getLogger(__name__)


def load(
    path: str | Path | None = None,
    dtype: torch.dtype | None = None,
    weights: str = "fp32",
    fuse: bool = False,
):
    """Load a Hugging Face-format checkpoint folder (weights, tokenizer, chat template, image settings),
    or with no path the default model, assembled from the installed tower packages, or a model vislang
    ships by its name ("retrieval": the image-text dual encoder).

    weights: "fp32", or "bf16" / "int8" / "q4" / "q8" to store the language model's linear layers in
    fewer bytes (faster CPU decoding; see vislang.generation.quantize; q4 and q8 are llama.cpp's
    Q4_1 and Q8_0 blocks, vislang.generation.blocks). fuse: q/k/v and gate/up as one matmul
    each, for inference (the model can no longer be saved or trained).
    """
    from .generation.quantize import quantize_decoder

    model = _load(path, dtype)
    if hasattr(model, "language_model"):
        quantize_decoder(model.language_model, weights, fuse=fuse)
    elif weights != "fp32":
        raise UnsupportedModelError(f"weights={weights!r} applies to a language model; {path} has none")
    return model


def _video_settings(path: Path, image_settings: dict | None) -> dict:
    """Where transformers looks for a video processor's settings, in its order: processor_config.json's
    "video_processor", video_preprocessor_config.json, then the image processor's file."""
    combined = path / "processor_config.json"
    if combined.is_file():
        video = json.loads(combined.read_text()).get("video_processor")
        if video:
            return video
    if (path / "video_preprocessor_config.json").is_file():
        return json.loads((path / "video_preprocessor_config.json").read_text())
    return image_settings or {}


def _siglip_image_settings(settings: dict | None, image_size: int) -> dict:
    """SigLIP's image processor squashes the whole image to a square (no crop) and maps pixels to
    [-1, 1]; its preprocessor_config.json usually leaves out what equals those defaults."""
    defaults = {
        "size": {"height": image_size, "width": image_size},
        "do_center_crop": False,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    given = {k: v for k, v in (settings or {}).items() if v is not None}
    return {**defaults, **given}


def _load_retrieval():
    from .models.retrieval import load_retrieval

    return load_retrieval()


# names `load` accepts for models that ship with vislang (a folder of that name wins)
NAMED = {"retrieval": _load_retrieval}


def _load(path, dtype):
    from .models import MODEL_TYPES
    from .models.default import load_default
    from .processing import ImageTransform, Tokenizer, load_chat_template

    if path is None:
        return load_default()
    if str(path) in NAMED and not Path(path).exists():  # a model vislang ships, by its name
        return NAMED[str(path)]()
    path = Path(path)
    hf = read_config(path)
    model_type = hf.get("model_type")
    if model_type == "vislang_default":
        return load_default(path)
    if model_type == "vislang_retrieval":
        from .models.retrieval import load_retrieval

        return load_retrieval(path)
    if model_type == "vislang_flamingo":
        from .models.flamingo import load_flamingo

        return load_flamingo(path)
    if model_type == "vislang_minigpt4":
        from .models.minigpt4 import load_minigpt4

        return load_minigpt4(path)
    if model_type not in MODEL_TYPES:
        own = ["vislang_default", "vislang_flamingo", "vislang_minigpt4", "vislang_retrieval"]
        supported = ", ".join(sorted([*MODEL_TYPES, *own]))
        raise UnsupportedModelError(
            f"{path}: model_type {model_type!r} is not supported; supported: {supported}"
        )
    config_cls, model_cls = MODEL_TYPES[model_type]
    fill = packaged = None
    if hf.get("language_model_from"):  # the default model: its language model ships in a package
        from .models import default_qwen as packaged

        fill = packaged.language_model_weights
    model = model_cls.from_pretrained(path, config_cls.from_hf(hf), dtype=dtype, fill=fill)
    if (path / "tokenizer.json").is_file():
        model.tokenizer = Tokenizer.from_dir(path)
    elif packaged is not None:
        model.tokenizer = packaged.packaged_tokenizer()
    model.chat_template = load_chat_template(path)
    if (path / "generation_config.json").is_file():  # e.g. Qwen2-VL also stops at <|endoftext|>
        eos = json.loads((path / "generation_config.json").read_text()).get("eos_token_id")
        model.generation_eos = (eos,) if isinstance(eos, int) else tuple(eos or ())
    settings = None
    if (path / "preprocessor_config.json").is_file():
        settings = json.loads((path / "preprocessor_config.json").read_text())
    if model_type in ("qwen2_vl", "qwen2_5_vl"):
        from .processing.qwen2vl import QwenImageTransform

        model.image_transform = QwenImageTransform.from_dict(settings or {})
        model.video_transform = QwenImageTransform.from_dict(_video_settings(path, settings), video=True)
    elif model_type == "idefics":
        from .processing.idefics import idefics_image_transform

        model.image_transform = idefics_image_transform(settings or {}, model.cfg.vision_config.image_size)
    elif model_type in ("blip-2", "instructblip"):
        from .processing.blip import blip_image_transform, load_qformer_tokenizer

        model.image_transform = blip_image_transform(settings or {}, model.cfg.vision_config.image_size)
        model.qformer_tokenizer = load_qformer_tokenizer(path)
    elif model_type == "siglip":
        model.image_transform = ImageTransform.from_dict(
            _siglip_image_settings(settings, model.cfg.vision_config.image_size)
        )
    else:
        image_size = model.cfg.vision_config.image_size
        settings = settings or {
            "size": {"shortest_edge": image_size},
            "crop_size": {"height": image_size, "width": image_size},
        }
        model.image_transform = ImageTransform.from_dict(settings)
    log.info("loaded %s from %s (%.1fM parameters)", model_type, path, model.num_parameters / 1e6)
    return model
