"""Qwen2-VL's multimodal positions: a (t, h, w) triple for every token of a prompt.

Text tokens count up by one on all three axes. A vision block (one image or video, already merged
2 x 2) starting at position s gives its token at frame f, row r, column c the triple
(s + f * interval, s + r, s + c): interval is 1 for Qwen2-VL and tokens_per_second *
seconds_per_grid for a Qwen2.5-VL video, so temporal positions follow real time. Whatever comes after
the block starts one past the largest position inside it, on any axis.

That last rule is the original Qwen release's (and vLLM's). transformers 5.x (checked on 5.24)
advances only by the block's spatial extent, max(h, w) / merge, so text after a video whose temporal
positions outrun its size overlaps the video's last frames, and the decode offset it then derives
(from the largest position, time included) no longer continues the prompt's text (its issue 45381).
For images (one frame) and short videos both rules agree.

Padding (attention_mask 0) is skipped: positions count real tokens only. The token types come from
the placeholder ids themselves; nothing else is needed.
"""

from __future__ import annotations

import torch


def vision_block_positions(start: int, grid_thw, merge: int, interval: float = 1.0) -> torch.Tensor:
    """[3, t * h/merge * w/merge] positions of one merged vision block starting at `start`."""
    t, h, w = (int(x) for x in grid_thw)
    h, w = h // merge, w // merge
    # fp32, as transformers computes it: a fractional interval must round the same way
    frames = (torch.arange(t, dtype=torch.float32) * torch.as_tensor(interval, dtype=torch.float32)).long()
    tt = frames[:, None, None].expand(t, h, w)
    hh = torch.arange(h)[None, :, None].expand(t, h, w)
    ww = torch.arange(w)[None, None, :].expand(t, h, w)
    return torch.stack([tt, hh, ww]).reshape(3, -1) + start


def rope_index(
    input_ids: torch.Tensor,
    image_token_id: int,
    video_token_id: int,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    merge: int = 2,
    video_intervals: list[float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions [3, B, T], per-row offsets [B]) for a batch of prompts.

    Grids are consumed in order across the batch (row 0's images first), as the processor emits them.
    video_intervals: the temporal step of each video (Qwen2.5-VL: tokens_per_second * seconds per grid);
    1 when None. offsets: what to add to a row's token count to get the position of its next token,
    which is all decoding needs (new tokens are text).
    """
    B, T = input_ids.shape
    positions = torch.zeros(3, B, T, dtype=torch.long)
    offsets = torch.zeros(B, dtype=torch.long)
    grids = {
        image_token_id: iter([] if image_grid_thw is None else image_grid_thw.reshape(-1, 3).tolist()),
        video_token_id: iter([] if video_grid_thw is None else video_grid_thw.reshape(-1, 3).tolist()),
    }
    intervals = iter(video_intervals or [])
    ids_cpu = input_ids.cpu()
    mask = None if attention_mask is None else attention_mask.cpu().bool()
    for row in range(B):
        ids = ids_cpu[row] if mask is None else ids_cpu[row][mask[row]]
        ids = ids.tolist()
        parts, next_pos, i = [], 0, 0
        while i < len(ids):
            token = ids[i]
            if token in grids:
                grid = next(grids[token], None)
                kind = "image" if token == image_token_id else "video"
                if grid is None:
                    raise ValueError(f"the prompt has more {kind} placeholders than {kind} grids were given")
                step = 1.0
                if token == video_token_id:
                    step = next(intervals, 1.0)
                block = vision_block_positions(next_pos, grid, merge, step)
                n = block.shape[1]
                if ids[i : i + n] != [token] * n:
                    raise ValueError(f"a {kind} of grid {grid} needs {n} consecutive placeholder tokens")
                parts.append(block)
                next_pos = int(block.max()) + 1
                i += n
            else:
                j = i
                while j < len(ids) and ids[j] not in grids:
                    j += 1
                parts.append(torch.arange(next_pos, next_pos + j - i).expand(3, -1))
                next_pos += j - i
                i = j
        row_pos = torch.cat(parts, dim=1) if parts else torch.zeros(3, 0, dtype=torch.long)
        if mask is None:
            positions[:, row] = row_pos
        else:
            positions[:, row, mask[row]] = row_pos
        offsets[row] = next_pos - len(ids)
    for token, rest in grids.items():
        if next(rest, None) is not None:
            kind = "image" if token == image_token_id else "video"
            raise ValueError(f"more {kind} grids were given than the prompt has {kind}s")
    return positions.to(input_ids.device), offsets.to(input_ids.device)
