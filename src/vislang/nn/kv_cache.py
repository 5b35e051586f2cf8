"""A key/value cache allocated once per generation: decoding writes in place, never concatenates."""

import torch


class KVCache:
    """Keys and values of every layer: [B, n_kv_heads, max_len, head_dim] each, filled left to right.

    `length` is how many positions are filled; a forward pass writes its new positions for each
    layer with `update` and then calls `advance` once.
    """

    def __init__(self, n_layers, batch, n_kv_heads, head_dim, max_len, dtype=torch.float32, device=None):
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.max_len = max_len
        self.length = 0
        # per-row position of the next token minus its count of tokens: what M-RoPE models (Qwen2-VL)
        # add to positions while decoding; set by their prefill, None for every other model
        self.offsets: torch.Tensor | None = None

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, H, T, D] after the filled part; return all keys and values so far."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions needed, {self.max_len} allocated")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def decode_positions(self, batch: int) -> torch.Tensor:
        """Where each of `batch` rows writes its next key in a one-token step (all at `length`)."""
        return torch.full((batch,), self.length, dtype=torch.long)

    def advance(self, n: int) -> None:
        self.length += n
