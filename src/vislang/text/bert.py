"""A BERT encoder (post-LayerNorm blocks, learned positions), the shape of all-MiniLM-L6-v2.

Read from a Hugging Face BertModel folder through an explicit key map; sentence embeddings are the
mean of the last layer's states over real tokens, as sentence-transformers pools that model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from ..nn import MLP, Attention, build_mask


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_hf(cls, d: dict) -> BertConfig:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


class BertLayer(nn.Module):
    """Post-norm: x = LN(x + attention(x)); x = LN(x + mlp(x))."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        D = cfg.hidden_size
        self.attn = Attention(D, cfg.num_attention_heads, qkv_bias=True, o_bias=True)
        self.attn_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.mlp = MLP(D, cfg.intermediate_size, cfg.hidden_act)
        self.mlp_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attn_norm(x + self.attn(x, mask))
        return self.mlp_norm(x + self.mlp(x))


class BertEncoder(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.hidden_size
        self.word_embeddings = nn.Embedding(cfg.vocab_size, D)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, D)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, D)
        self.embed_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[1]
        if n > self.cfg.max_position_embeddings:
            raise ValueError(f"{n} tokens exceed the encoder's {self.cfg.max_position_embeddings} positions")
        x = self.word_embeddings(input_ids) + self.position_embeddings.weight[:n]
        return self.embed_norm(x + self.token_type_embeddings.weight[0])  # one segment

    def run_layers(
        self, x: torch.Tensor, attention_mask: torch.Tensor, start: int = 0, stop: int | None = None
    ) -> torch.Tensor:
        """Layers start..stop-1 over states x [B, T, D]; padding keys are masked out."""
        mask = build_mask(attention_mask, x.shape[1], x.shape[1], x.dtype, causal=False)
        for layer in self.layers[start:stop]:
            x = layer(x, mask)
        return x

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Last-layer states [B, T, D]."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.run_layers(self.embed(input_ids), attention_mask)


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T, D] -> [B, D]: the mean over real tokens."""
    m = attention_mask.to(states.dtype)[..., None]
    return (states * m).sum(1) / m.sum(1).clamp(min=1e-9)


# Hugging Face BertModel names -> vislang's (per layer: encoder.layer.{i}.<hf> -> layers.{i}.<ours>)
_LAYER_KEYS = {
    "attention.self.query": "attn.q_proj",
    "attention.self.key": "attn.k_proj",
    "attention.self.value": "attn.v_proj",
    "attention.output.dense": "attn.o_proj",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "output.LayerNorm": "mlp_norm",
}
_TOP_KEYS = {
    "embeddings.word_embeddings": "word_embeddings",
    "embeddings.position_embeddings": "position_embeddings",
    "embeddings.token_type_embeddings": "token_type_embeddings",
    "embeddings.LayerNorm": "embed_norm",
}


def bert_key(hf_key: str) -> str | None:
    """vislang's name for a BertModel weight, None for what vislang does not use (pooler, buffers)."""
    for prefix in ("bert.", ""):
        if prefix and hf_key.startswith(prefix):
            hf_key = hf_key[len(prefix) :]
    if hf_key.startswith("encoder.layer."):
        i, rest = hf_key[len("encoder.layer.") :].split(".", 1)
        for hf, ours in _LAYER_KEYS.items():
            if rest.startswith(hf + "."):
                return f"layers.{i}.{ours}{rest[len(hf) :]}"
        return None
    for hf, ours in _TOP_KEYS.items():
        if hf_key.startswith(hf + "."):
            return ours + hf_key[len(hf) :]
    return None


def load_bert(path: str | Path) -> BertEncoder:
    """A BertModel folder (config.json, model.safetensors) -> BertEncoder in eval mode; every weight
    the encoder has must be found."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg = BertConfig.from_hf(json.loads((path / "config.json").read_text()))
    model = BertEncoder(cfg)
    state = {}
    for k, v in load_file(path / "model.safetensors").items():
        ours = bert_key(k)
        if ours is not None:
            state[ours] = v
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: BERT weights missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()
