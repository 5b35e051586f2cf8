"""Autoregressive generation with a KV cache: one prefill pass, then one token per step."""

from __future__ import annotations

import torch

from .quantize import prefill
from .sampling import SamplingParams, next_token, penalize_repetition


@torch.inference_mode()
def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    params: SamplingParams | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    **model_inputs,
) -> torch.Tensor:
    """New token ids [B, n] (n <= max_new_tokens); rows that stopped early are filled with pad.

    `model(input_ids=, attention_mask=, cache=, **model_inputs)` must return `.logits`, and
    `model.new_cache(batch, max_len)` a KVCache. model_inputs (pixel values, ...) go to the prefill only.
    """
    params = params or SamplingParams()
    B, T = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    eos = torch.tensor(
        []
        if eos_token_id is None
        else [eos_token_id]
        if isinstance(eos_token_id, int)
        else list(eos_token_id),
        dtype=torch.long,
        device=input_ids.device,
    )
    pad = pad_token_id if pad_token_id is not None else (int(eos[0]) if len(eos) else 0)
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(params.seed)

    cache = model.new_cache(B, T + params.max_new_tokens)
    with prefill():
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, cache=cache, last_only=True, **model_inputs
        ).logits
    done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    # tokens the repetition penalty sees: the prompt (padding stands in as the row's last token)
    seen = torch.where(attention_mask.bool(), input_ids, input_ids[:, -1:])
    out = []
    for step in range(params.max_new_tokens):
        scores = penalize_repetition(logits[:, -1], seen, params.repetition_penalty)
        if step < params.min_new_tokens and len(eos):
            scores = scores.index_fill(-1, eos, float("-inf"))
        tok = next_token(scores, params, generator)
        tok = torch.where(done, torch.full_like(tok, pad), tok)
        out.append(tok)
        if params.repetition_penalty != 1.0:
            seen = torch.cat([seen, tok[:, None]], dim=1)
        done = done | torch.isin(tok, eos)
        if bool(done.all()) or step == params.max_new_tokens - 1:
            break
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        logits = model(input_ids=tok[:, None], attention_mask=attention_mask, cache=cache).logits
    if not out:
        return input_ids.new_zeros(B, 0)
    return torch.stack(out, dim=1)
