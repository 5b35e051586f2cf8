"""One explicit attention mask, built from the parts that apply: causal, padding, window, media.

Every attention call in vislang takes a single additive float mask [B, 1, Tq, Tk]. Blocked
entries hold the dtype's minimum rather than -inf, so a query row with nothing to attend to
(a left-padding position) gets a uniform softmax instead of NaNs that would leak into the
values of later layers.
"""

import torch


class _Causal:
    """Stands for the plain causal mask of a prompt with no padding and nothing cached: attention then
    runs SDPA's is_causal path (a flash kernel on CPU), twice as fast on long prompts as an explicit
    [T, T] mask, which SDPA can only apply in its math path (and which costs T x T memory)."""

    def __repr__(self) -> str:
        return "CAUSAL"


CAUSAL = _Causal()


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids [B, T] that count only real tokens, so left padding does not shift RoPE."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)


def build_mask(
    key_padding: torch.Tensor | None,
    q_len: int,
    k_len: int,
    dtype: torch.dtype,
    causal: bool = True,
    window: int | None = None,
    allowed: torch.Tensor | None = None,
    batch: int = 1,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Additive mask [B, 1, q_len, k_len]; queries are the last q_len of the k_len keys.

    key_padding: [B, k_len] with 1 for real tokens, 0 for padding (or None).
    window: sliding-window size (query i sees keys j with i - j < window).
    allowed: an extra boolean [B, 1, q_len, k_len] (e.g. media masks) and-ed in.
    """
    if key_padding is not None:
        batch, device = key_padding.shape[0], key_padding.device
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    ok = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
    if causal:
        ok = ok & (k_pos <= q_pos)
    if window is not None:
        ok = ok & (q_pos - k_pos < window)
    ok = ok[None, None].expand(batch, 1, q_len, k_len)
    if key_padding is not None:
        ok = ok & key_padding[:, None, None, :].bool()
    if allowed is not None:
        ok = ok & allowed
    mask = torch.zeros(ok.shape, dtype=dtype, device=device)
    return mask.masked_fill(~ok, torch.finfo(dtype).min)
