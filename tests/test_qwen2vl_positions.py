"""The (t, h, w) position index, checked against transformers' own get_rope_index where the two agree,
and pinned by golden values where vislang follows the original Qwen release instead."""

import pytest
import torch

from qwen_tiny import END, IMAGE, START, VIDEO, build_hf
from vislang.models.qwen2vl_positions import rope_index

TEXT = [20, 21, 22]


def theirs(model, ids, mask=None, images=None, videos=None, seconds=None):
    types = (ids == IMAGE).int() + 2 * (ids == VIDEO).int()
    extra = {} if seconds is None else {"second_per_grid_ts": seconds}
    return model.model.get_rope_index(
        ids, types, image_grid_thw=images, video_grid_thw=videos, attention_mask=mask, **extra
    )


def ours(ids, mask=None, images=None, videos=None, intervals=None):
    return rope_index(ids, IMAGE, VIDEO, images, videos, mask, 2, intervals)


def block(token, n):
    return [START] + [token] * n + [END]


CASES = {
    "text only": ([TEXT * 3], None, None),
    "one image": ([TEXT + block(IMAGE, 6) + TEXT], [[1, 4, 6]], None),
    "two images": ([TEXT + block(IMAGE, 6) + [30] + block(IMAGE, 2) + TEXT], [[1, 4, 6], [1, 2, 4]], None),
    "a video": ([TEXT + block(VIDEO, 12) + TEXT], None, [[2, 6, 4]]),
    "a video then an image": ([block(VIDEO, 8) + TEXT + block(IMAGE, 6)], [[1, 6, 4]], [[2, 4, 4]]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("v25", [False, True])
def test_matches_transformers(case, v25):
    rows, images, videos = CASES[case]
    model = build_hf(v25)
    ids = torch.tensor(rows)
    images = None if images is None else torch.tensor(images)
    videos = None if videos is None else torch.tensor(videos)
    seconds = torch.tensor([0.5] * len(videos)) if (v25 and videos is not None) else None
    ref_pos, ref_delta = theirs(model, ids, None, images, videos, seconds)
    intervals = None if seconds is None else [2 * s for s in seconds]  # tokens_per_second 2
    pos, delta = ours(ids, None, images, videos, intervals)
    assert torch.equal(pos, ref_pos)
    assert delta.tolist() == ref_delta.flatten().tolist()


def test_left_padding_matches_transformers():
    model = build_hf(False)
    row0 = TEXT + block(IMAGE, 6) + TEXT
    row1 = [25] * 4 + block(IMAGE, 2) + TEXT + block(IMAGE, 6)
    T = max(len(row0), len(row1))
    ids = torch.zeros(2, T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, row in enumerate([row0, row1]):
        ids[r, T - len(row) :], mask[r, T - len(row) :] = torch.tensor(row), 1
    images = torch.tensor([[1, 4, 6], [1, 2, 4], [1, 4, 6]])
    ref_pos, ref_delta = theirs(model, ids, mask, images)
    pos, delta = ours(ids, mask, images)
    real = mask.bool()
    assert torch.equal(pos[:, real], ref_pos[:, real])  # padding positions are never read
    assert delta.tolist() == ref_delta.flatten().tolist()


def test_golden_one_image():
    # text 0..2, vision_start 3; a 4 x 6 patch grid merges to 2 x 3 tokens at t=4, h=4..5, w=4..6
    pos, delta = ours(torch.tensor([TEXT + block(IMAGE, 6) + [40]]), images=torch.tensor([[1, 4, 6]]))
    assert pos[:, 0].tolist() == [
        [0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 7, 8],
        [0, 1, 2, 3, 4, 4, 4, 5, 5, 5, 7, 8],
        [0, 1, 2, 3, 4, 5, 6, 4, 5, 6, 7, 8],
    ]
    assert delta.tolist() == [9 - 12]


def test_golden_long_video_follows_the_original_release():
    """A video with more temporal patches than rows or columns. The original Qwen release (and vLLM)
    starts the text after it one past the video's largest position, here its last frame (t = 6).
    transformers 5.24 starts it at 1 + max(h, w) / 2 = 2, overlapping frames 2 to 4, and its decode
    offset, taken from the largest position, then jumps: the first new token gets 7, after text
    that ended at 4."""
    ids = torch.tensor([[START] + [VIDEO] * 6 + [END, 41, 42]])
    videos = torch.tensor([[6, 2, 2]])  # 6 temporal patches of 1 x 1 merged token
    pos, delta = ours(ids, videos=videos)
    assert pos[:, 0].tolist() == [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [0, 1, 1, 1, 1, 1, 1, 7, 8, 9],
        [0, 1, 1, 1, 1, 1, 1, 7, 8, 9],
    ]
    assert delta.tolist() == [10 - 10]  # the first new token continues at 10
    model = build_hf(False)
    ref_pos, ref_delta = theirs(model, ids, videos=videos)
    assert ref_pos[:, 0, -3:].tolist() == [[2, 3, 4]] * 3  # what this test pins vislang away from
    assert ref_delta.flatten().tolist() == [7 - 10]


def test_golden_qwen25_temporal_scaling():
    """Qwen2.5-VL: temporal positions step by tokens_per_second x seconds per temporal patch."""
    ids = torch.tensor([[START] + [VIDEO] * 3 + [END, 41]])
    pos, delta = ours(ids, videos=torch.tensor([[3, 2, 2]]), intervals=[2 * 1.5])  # 2 fps -> 1 s; 1.5 s
    assert pos[0, 0].tolist() == [0, 1, 4, 7, 8, 9]
    assert pos[1, 0].tolist() == [0, 1, 1, 1, 8, 9]
    assert delta.tolist() == [10 - 6]


def test_grid_count_errors():
    with pytest.raises(ValueError, match="more image placeholders"):
        ours(torch.tensor([block(IMAGE, 6)]))
    with pytest.raises(ValueError, match="more image grids"):
        ours(torch.tensor([TEXT]), images=torch.tensor([[1, 4, 6]]))
    with pytest.raises(ValueError, match="consecutive"):
        ours(torch.tensor([block(IMAGE, 5)]), images=torch.tensor([[1, 4, 6]]))
