"""A KV cache of fixed slots, one sequence each, for continuous batching.

Every slot holds [n_kv_heads, capacity, head_dim] keys and values per layer. The capacity follows
the longest sequence in use: it starts at one block (256 positions) and grows by doubling, up to
max_len (the model's context), only when a sequence needs more; when every slot is free it drops
back to one block. So many short conversations cost little memory and a long one costs what it
needs. (All slots share the capacity, which keeps one batched attention call per layer: a long
sequence makes every slot that long. `bytes_for(n)` says what a capacity of n costs.)
Sequences keep their own lengths: a prompt is prefilled into its slot alone or in a padded batch
whose padding never enters a slot, and a decode step writes each row's new key at that row's own
length. Rows of different lengths are decoded together under a padding mask over the longest.
"""

from __future__ import annotations

import torch


class SlotCache:
    BLOCK = 256

    def __init__(self, n_layers, slots, n_kv_heads, head_dim, max_len, dtype=torch.float32, device=None):
        self.n_layers, self.n_kv_heads, self.head_dim = n_layers, n_kv_heads, head_dim
        self.dtype, self.device = dtype, device
        self.slots, self.max_len = slots, max_len
        self.limit = max_len  # the largest capacity allowed (a memory budget may set it lower)
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.peak_bytes = 0  # the most the cache has held
        self._allocate(min(self.BLOCK, max_len))
        self.lengths = [0] * slots  # filled positions of each slot
        self.offsets = [0] * slots  # M-RoPE: next position minus length (0 for 1D RoPE models)
        self._rows: torch.Tensor | None = None  # rows 0..n-1 of the decode step under way
        self._pos: torch.Tensor | None = None
        self.length = 0  # the KVCache protocol: positions before this step's (the longest row's)

    @classmethod
    def for_decoder(cls, decoder, slots: int, max_len: int) -> SlotCache:
        c, p = decoder.cfg, decoder.embed_tokens.weight
        return cls(c.num_hidden_layers, slots, c.num_key_value_heads, c.head_dim, max_len, p.dtype, p.device)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def bytes_for(self, capacity: int) -> int:
        """Bytes of keys and values for every slot at this capacity."""
        per = self.n_layers * 2 * self.slots * self.n_kv_heads * self.head_dim
        return per * capacity * torch.empty((), dtype=self.dtype).element_size()

    def needed_capacity(self, positions: int) -> int:
        """The capacity `ensure(positions)` would grow to."""
        if positions <= self.capacity:
            return self.capacity
        grown = max(positions, 2 * self.capacity)
        return max(positions, min(self.limit, -(-grown // self.BLOCK) * self.BLOCK))

    def ensure(self, positions: int) -> None:
        """Room for `positions` positions in every slot: grow (copying what is filled) if needed."""
        if positions > max(self.limit, self.capacity):
            raise ValueError(f"KV cache full: {positions} positions needed, {self.limit} allowed")
        if positions > self.capacity:
            self._allocate(self.needed_capacity(positions))

    def shrink_if_idle(self) -> None:
        """Give the memory back once no slot holds anything."""
        if not any(self.lengths) and self.capacity > self.BLOCK:
            self._allocate(min(self.BLOCK, self.max_len))

    def _allocate(self, capacity: int) -> None:
        shape = (self.slots, self.n_kv_heads, capacity, self.head_dim)
        old = list(zip(self.keys, self.values))
        self.keys = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.n_layers)]
        self.values = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.n_layers)]
        self.peak_bytes = max(self.peak_bytes, self.nbytes())
        keep = min(capacity, old[0][0].shape[2]) if old else 0
        for (k, v), (ok, ov) in zip(zip(self.keys, self.values), old):
            k[:, :, :keep] = ok[:, :, :keep]
            v[:, :, :keep] = ov[:, :, :keep]

    # --- one decode step over rows 0..n-1 ---

    def begin_step(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Position ids [n, 1] and the key mask [n, longest + 1] for one new token in each of
        slots 0..n-1 (the engine keeps its busy slots there: see `move`)."""
        lengths = torch.tensor(self.lengths[:n])
        if int(lengths.max()) >= self.max_len:
            raise ValueError(f"a slot is full: {self.max_len} positions allocated")
        self.length = int(lengths.max())
        self.ensure(self.length + 1)
        self._rows, self._pos = torch.arange(n), lengths
        mask = (torch.arange(self.length + 1)[None, :] <= lengths[:, None]).long()
        positions = lengths + torch.tensor(self.offsets[:n])
        return positions[:, None], mask

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = k.shape[0]
        self.keys[layer][self._rows, :, self._pos] = k[:, :, 0]
        self.values[layer][self._rows, :, self._pos] = v[:, :, 0]
        return self.keys[layer][:n, :, : self.length + 1], self.values[layer][:n, :, : self.length + 1]

    def decode_positions(self, batch: int) -> torch.Tensor:
        """Where each row of the step under way writes its new key (its own length)."""
        if self._pos is None or len(self._pos) != batch:
            raise ValueError("decode_positions outside a step begun for these rows")
        return self._pos

    def advance(self, n_tokens: int) -> None:
        for row in range(len(self._rows)):
            self.lengths[row] += n_tokens

    # --- one slot at a time ---

    def view(self, slot: int) -> SlotView:
        return SlotView(self, slot)

    def batch_view(self, slots: list[int], lengths: list[int]) -> SlotBatchView:
        return SlotBatchView(self, slots, lengths)

    def free(self, slot: int) -> None:
        self.lengths[slot] = 0
        self.offsets[slot] = 0

    def move(self, src: int, dst: int) -> None:
        """Relocate a sequence to another (free) slot: what keeps the busy slots in rows 0..n-1."""
        self.copy_slot(src, dst)
        self.free(src)

    def copy_slot(self, src: int, dst: int) -> None:
        """Give slot dst the same sequence as src (requests that share one prefill)."""
        n = self.lengths[src]
        for k, v in zip(self.keys, self.values):
            k[dst, :, :n] = k[src, :, :n]
            v[dst, :, :n] = v[src, :, :n]
        self.lengths[dst], self.offsets[dst] = n, self.offsets[src]

    def read_prefix(self, slot: int, n: int) -> list:
        """Copies of the first n positions of a slot, per layer, and the slot's position offset as a
        last 0-d tensor (what a prefix cache stores: after the last image only text follows, so the
        offset of the whole prompt is the prefix's)."""
        kv = [(k[slot, :, :n].clone(), v[slot, :, :n].clone()) for k, v in zip(self.keys, self.values)]
        return [*kv, torch.tensor(self.offsets[slot])]

    def write_prefix(self, slot: int, prefix: list) -> None:
        *kv, offset = prefix
        n = kv[0][0].shape[1]
        self.ensure(n)
        for (k, v), (pk, pv) in zip(zip(self.keys, self.values), kv):
            k[slot, :, :n] = pk
            v[slot, :, :n] = pv
        self.lengths[slot] = n
        self.offsets[slot] = int(offset)


class SlotView:
    """One slot seen as a batch-1 KVCache, for prefilling a prompt (or its tail) into it."""

    def __init__(self, cache: SlotCache, slot: int):
        self.cache, self.slot = cache, slot

    @property
    def length(self) -> int:
        return self.cache.lengths[self.slot]

    @property
    def max_len(self) -> int:
        return self.cache.max_len

    @property
    def offsets(self) -> torch.Tensor:
        return torch.tensor([self.cache.offsets[self.slot]])

    @offsets.setter
    def offsets(self, value: torch.Tensor) -> None:
        self.cache.offsets[self.slot] = int(value[0])

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end, s = self.length, self.length + k.shape[2], self.slot
        self.cache.ensure(end)
        self.cache.keys[layer][s : s + 1, :, start:end] = k
        self.cache.values[layer][s : s + 1, :, start:end] = v
        return self.cache.keys[layer][s : s + 1, :, :end], self.cache.values[layer][s : s + 1, :, :end]

    def advance(self, n: int) -> None:
        self.cache.lengths[self.slot] += n


class SlotBatchView:
    """Empty slots seen as one KVCache for a left-padded batch of prompts: attention runs on the
    batch's own keys and values (under its padding mask), and each slot keeps only its row's real
    tokens, from position 0, as if its prompt had been prefilled alone."""

    length = 0  # a prefill: nothing cached before it

    def __init__(self, cache: SlotCache, slots: list[int], lengths: list[int]):
        self.cache, self.slots, self.lengths = cache, slots, lengths
        self.max_len = cache.max_len
        cache.ensure(max(lengths))

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = k.shape[2]
        keys, values = self.cache.keys[layer], self.cache.values[layer]
        for row, (slot, n) in enumerate(zip(self.slots, self.lengths)):
            keys[slot, :, :n] = k[row, :, T - n :]
            values[slot, :, :n] = v[row, :, T - n :]
        return k, v

    @property
    def offsets(self) -> torch.Tensor:
        return torch.tensor([self.cache.offsets[s] for s in self.slots])

    @offsets.setter
    def offsets(self, value: torch.Tensor) -> None:
        for slot, offset in zip(self.slots, value.tolist()):
            self.cache.offsets[slot] = int(offset)

    def advance(self, n: int) -> None:
        for slot, length in zip(self.slots, self.lengths):
            self.cache.lengths[slot] = length
