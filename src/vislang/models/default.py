"""The default model: ImageNet MobileNetV2 -> 2x2 merge -> MLP projector -> SmolLM2-135M-Instruct.

Both towers are real pretrained networks that ship inside packages; only the projector (and
optional LoRA adapters) is trained by vislang and stored in vislang/assets/default.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..connect import MLPProjector
from ..errors import CheckpointError
from ..processing import ImageTransform
from ..processing.chat_template import smollm2_chat_template
from ..vision.mobilenet import IMAGENET_MEAN, IMAGENET_STD
from .chat import ChatMixin
from .output import ModelOutput
from .splice import answer_loss, splice_image_features

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "default"
WEIGHTS = "projector.safetensors"


def save_trained_part(model, path: str | Path, weights: str, dtype: torch.dtype) -> None:
    """A model whose towers come from packages: config.json names them, `weights` holds the rest
    (model.trainable_state())."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(asdict(model.cfg), indent=2) + "\n")
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.trainable_state().items()}
    save_file(state, str(path / weights), metadata={"format": "pt"})


def load_trained_part(model, path: str | Path, weights: str) -> None:
    state = load_file(str(Path(path) / weights))
    own = model.trainable_state()
    if set(state) != set(own):
        odd = sorted(set(state) ^ set(own))[:5]
        raise CheckpointError(f"trained weights in {path} do not fit the model: {odd}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)


def packaged_towers(seed: int | None = None) -> tuple[nn.Module, nn.Module, object]:
    """The installed ImageNet MobileNetV2, SmolLM2-135M-Instruct and its tokenizer; then the global
    seed, so what the caller builds next (the trained parts) starts the same on every run."""
    from ..checkpoints.gguf import load_gguf_decoder, smollm2_path
    from ..checkpoints.torchvision import load_mobilenet_v2
    from ..processing.gguf_tokenizer import load_gguf_tokenizer

    towers = load_mobilenet_v2(), load_gguf_decoder(), load_gguf_tokenizer(smollm2_path())
    if seed is not None:
        torch.manual_seed(seed)
    return towers


def load_trained_folder(path: str | Path, config_cls, build, what: str):
    """A folder save_trained_part wrote: config_cls from its config.json (unknown settings are an
    error), the model `build(cfg)` makes around the packaged towers, and the trained weights."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} holds no {what} (config.json is missing)")
    settings = json.loads((path / "config.json").read_text())
    unknown = sorted(set(settings) - set(config_cls.__dataclass_fields__))
    if unknown:
        raise CheckpointError(f"{path}/config.json: unknown {what} settings {unknown}")
    model = build(config_cls(**settings))
    model.load_trained(path)
    return model.eval()


def mobilenet_transform(side: int) -> ImageTransform:
    """ImageNet's normalization on a side x side bicubic resize, no crop: MobileNetV2's input."""
    return ImageTransform.from_dict(
        {
            "size": {"height": side, "width": side},
            "do_center_crop": False,
            "resample": 3,
            "image_mean": list(IMAGENET_MEAN),
            "image_std": list(IMAGENET_STD),
        }
    )


@dataclass
class DefaultConfig:
    model_type: str = "vislang_default"
    image_size: int = 224  # images are resized (not cropped) to a square: boxes map linearly
    merge: int = 2  # k x k neighbouring grid cells form one token: 7x7 -> 4x4 tokens at 224 px
    vision_dim: int = 1280
    text_dim: int = 576
    projector_hidden_act: str = "gelu"
    image_token: str = "<reponame>"  # an unused SmolLM2 control token stands in for images
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])

    @property
    def tokens_per_side(self) -> int:
        return -(-(self.image_size // 32) // self.merge)


def merge_grid(features: torch.Tensor, k: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, ceil(H/k) * ceil(W/k), k*k*C]: each token holds a k x k block of cells.

    A fixed merge rather than a learned pooling: no information is thrown away, the projector sees
    every cell, and the LM gets k*k fewer tokens to attend over (the cost of a CPU step).
    """
    if k == 1:
        return features.flatten(2).transpose(1, 2)
    B, C, H, W = features.shape
    features = F.pad(features, (0, -W % k, 0, -H % k))  # zero cells past the right and bottom edges
    H2, W2 = features.shape[2] // k, features.shape[3] // k
    x = features.reshape(B, C, H2, k, W2, k).permute(0, 2, 4, 3, 5, 1)  # [B, H2, W2, k, k, C]
    return x.reshape(B, H2 * W2, k * k * C)


class DefaultVLM(ChatMixin, nn.Module):
    def __init__(self, cfg: DefaultConfig, vision: nn.Module, language_model: nn.Module, tokenizer):
        super().__init__()
        self.cfg = cfg
        self.vision = vision.eval().requires_grad_(False)
        self.language_model = language_model
        self.projector = MLPProjector(cfg.vision_dim * cfg.merge**2, cfg.text_dim, cfg.projector_hidden_act)
        self.tokenizer = tokenizer
        # ChatML as SmolLM2 was tuned on; each image becomes the placeholder token and a newline
        self.chat_template = smollm2_chat_template(cfg.image_token + "\n")
        self.image_transform = mobilenet_transform(cfg.image_size)

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.token_to_id(self.cfg.image_token)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vision.eval()  # BatchNorm keeps ImageNet statistics whatever the mode
        return self

    def num_image_tokens(self, image_size_hw=None) -> int:
        return self.cfg.tokens_per_side**2

    def image_features(self, pixel_values: torch.Tensor, image_sizes=None) -> list[torch.Tensor]:
        with torch.no_grad():
            grid = self.vision.features(pixel_values)  # [N, 1280, 7, 7]
        return list(self.projector(merge_grid(grid, self.cfg.merge)))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache=None,
        image_features: list[torch.Tensor] | None = None,
        last_only: bool = False,
        **unused,
    ) -> ModelOutput:
        if image_features is None and pixel_values is not None and pixel_values.numel() > 0:
            image_features = self.image_features(pixel_values)
        embeds = self.language_model.embed_tokens(input_ids)
        prompt = cache is None or cache.length == 0
        embeds = splice_image_features(embeds, input_ids, self.image_token_id, image_features, prompt)
        if labels is not None:
            hidden = self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, logits=False)
            return ModelOutput(loss=answer_loss(self.language_model.lm_head, hidden, labels))
        logits = self.language_model(
            inputs_embeds=embeds, attention_mask=attention_mask, cache=cache, last_only=last_only
        )
        return ModelOutput(logits=logits, image_features=image_features)

    # --- the trained part ---

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith("projector.") or ".lora_" in k}

    def save_trained(self, path: str | Path, dtype: torch.dtype = torch.bfloat16) -> None:
        """config.json and the trained weights: a few MB, the only part of the model vislang ships."""
        save_trained_part(self, path, WEIGHTS, dtype)

    def load_trained(self, path: str | Path) -> None:
        load_trained_part(self, path, WEIGHTS)


def assemble(cfg: DefaultConfig, seed: int | None = None) -> DefaultVLM:
    """The installed pretrained towers joined by a fresh projector (seeded: a rerun is the same run)."""
    return DefaultVLM(cfg, *packaged_towers(seed))


def load_default(path: str | Path | None = None, trained: bool = True) -> DefaultVLM:
    """Assemble the default model from the installed tower packages plus vislang's trained weights."""
    path = Path(path) if path is not None else ASSETS
    cfg = DefaultConfig()
    if (path / "config.json").is_file():
        cfg = DefaultConfig(**json.loads((path / "config.json").read_text()))
    model = assemble(cfg)
    if cfg.lora_rank:
        from ..train.lora import add_lora

        add_lora(model.language_model, cfg.lora_targets, cfg.lora_rank, cfg.lora_alpha)
    if trained and (path / WEIGHTS).is_file():
        model.load_trained(path)
    elif trained:
        log.warning("no trained projector in %s: the default model cannot see yet", path)
    return model.eval()
