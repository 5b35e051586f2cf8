"""Loading and saving any vislang model in the Hugging Face layout."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import load_weights, read_state_dict, write_checkpoint


class PretrainedMixin:
    """Needs `cfg` (with to_hf and model_type) and the class attribute ARCHITECTURE."""

    ARCHITECTURE = ""
    tokenizer = None
    chat_template: str | None = None
    image_transform = None

    @property
    def tied(self) -> bool:
        return bool(getattr(self.cfg, "tie_word_embeddings", False))

    @classmethod
    def from_pretrained(cls, path, cfg, dtype: torch.dtype | None = None, fill=None):
        """fill(cfg, expected_state) -> weights the folder names but does not store (the default
        model's language model, which comes from its package)."""
        # build on the meta device: no time spent on random weights that are overwritten at once
        with torch.device("meta"):
            model = cls(cfg)
        # the key map: the model type's, or one the config names (BLIP-2: per language model)
        state = read_state_dict(path, getattr(cfg, "keymap", cfg.model_type), dtype)
        if fill is not None:
            extra = fill(cfg, model.state_dict())
            state.update({k: v.to(dtype) if dtype is not None else v for k, v in extra.items()})
        load_weights(model, state, model.tied, str(path))
        for m in model.modules():
            if hasattr(m, "reset_buffers"):
                m.reset_buffers()
            if hasattr(m, "tie_weights"):
                m.tie_weights()
        return model.eval()

    def save_pretrained(self, path, max_shard_bytes: int = 5 * 2**30) -> None:
        """config.json, weights, and whatever processing files the model carries."""
        path = Path(path)
        hf = {**self.cfg.to_hf(), "architectures": [self.ARCHITECTURE]}
        hf.pop("language_model_from", None)  # every weight is written: the folder stands alone
        keymap = getattr(self.cfg, "keymap", self.cfg.model_type)
        write_checkpoint(self, hf, keymap, path, self.tied, max_shard_bytes)
        if self.tokenizer is not None:
            self.tokenizer.save(path)
        if self.chat_template:
            (path / "chat_template.jinja").write_text(self.chat_template)
        if self.image_transform is not None:
            (path / "preprocessor_config.json").write_text(
                json.dumps(self.image_transform.to_dict(), indent=2)
            )

    @property
    def num_parameters(self) -> int:
        assert isinstance(self, nn.Module)
        return sum(p.numel() for p in self.parameters())
