"""Qwen2-VL through chat and the continuous-batching engine: batched greedy equals one by one with
mixed image sizes, a video and text-only rows (each slot keeps its own M-RoPE offset); the caches;
fused and reduced weights; bad input."""

import pytest
import torch

import vislang
from qwen_tiny import qwen_folder, random_image
from vislang.errors import VislangError
from vislang.generation.engine import Engine
from vislang.processing.video import VideoTooLongError

WORDS = "what is in the picture ? a red circle blue square describe it hello video".split()


@pytest.fixture(scope="module", params=[False, True], ids=["qwen2_vl", "qwen2_5_vl"])
def model(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("engine_qwen")
    qwen_folder(path, v25=request.param)
    return vislang.load(path)


def text(i):
    g = torch.Generator().manual_seed(100 + i)
    picks = torch.randint(0, len(WORDS), (2 + 3 * (i % 4),), generator=g).tolist()
    return " ".join(WORDS[k] for k in picks)


def conversation(i):
    """Row kinds cycle: one image, two images of other sizes, a video (3 frames), text only."""
    kind = i % 4
    content = []
    if kind == 0:
        content.append({"type": "image", "image": random_image(60 + 7 * i, 40 + 3 * i, i)})
    elif kind == 1:
        content.append({"type": "image", "image": random_image(30 + 5 * i, 90, i)})
        content.append({"type": "image", "image": random_image(120, 50, i + 1)})
    elif kind == 2:
        frames = [random_image(112, 84, 50 + i + f) for f in range(3)]
        content.append({"type": "video", "video": frames})
    content.append({"type": "text", "text": text(i)})
    return [{"role": "user", "content": content}]


def requests(n=8):
    return [(conversation(i), dict(max_new_tokens=3 + 2 * i, min_new_tokens=3 + 2 * i)) for i in range(n)]


def test_batched_greedy_equals_one_by_one(model):
    alone = [model.chat(msgs, **kw).token_ids for msgs, kw in requests()]
    with Engine(model, max_batch=3, max_len=512) as engine:
        handles = [engine.submit(msgs, **kw) for msgs, kw in requests()]
        together = [h.result(120).token_ids for h in handles]
    assert together == alone
    assert [len(t) for t in together] == [3 + 2 * i for i in range(8)]


def test_repeated_image_reuses_features_and_prefix(model):
    image = random_image(90, 60, 3)

    def ask(before, after):
        content = [{"type": "text", "text": before}, {"type": "image", "image": image}]
        return [{"role": "user", "content": content + [{"type": "text", "text": after}]}]

    first, same_start, other_start = ask("hello", "what is it ?"), ask("hello", "describe it"), ask("a", "it")
    alone = [model.chat(m, max_new_tokens=5).token_ids for m in (first, same_start, other_start)]
    with Engine(model, max_batch=2, max_len=512) as engine:
        done = [engine.generate(m, max_new_tokens=5) for m in (first, same_start, other_start)]
    assert [d.token_ids for d in done] == alone
    assert done[1].cached["prefix_tokens"] > 0  # everything up to the image: its KV and offset reused
    assert done[2].cached == {"image_features": 1, "prefix_tokens": 0}  # other context: features only


def test_per_request_resolution_changes_tokens_not_correctness(model):
    image = random_image(200, 140, 7)
    small = [{"role": "user", "content": [{"type": "image", "image": image, "max_pixels": 56 * 56}]}]
    large = [{"role": "user", "content": [{"type": "image", "image": image}]}]
    a, b = model.chat(small, max_new_tokens=3), model.chat(large, max_new_tokens=3)
    assert a.usage["prompt_tokens"] < b.usage["prompt_tokens"]
    with Engine(model, max_batch=2, max_len=512) as engine:
        ha, hb = engine.submit(small, max_new_tokens=3), engine.submit(large, max_new_tokens=3)
        assert ha.result(60).token_ids == a.token_ids and hb.result(60).token_ids == b.token_ids


@pytest.mark.parametrize("weights", ["fp32", "int8", "bf16"])
def test_fused_and_reduced_weights_batch_like_one_by_one(model, tmp_path, weights):
    path = tmp_path / "ckpt"
    model.save_pretrained(path)
    fast = vislang.load(path, weights=weights, fuse=True)
    alone = [fast.chat(msgs, **kw).token_ids for msgs, kw in requests(4)]
    with Engine(fast, max_batch=4, max_len=512) as engine:
        together = [h.result(120).token_ids for h in [engine.submit(m, **kw) for m, kw in requests(4)]]
    assert together == alone


def test_video_over_the_frame_limit_is_refused(model):
    frames = [random_image(28, 28, i) for i in range(model.max_frames + 2)]
    msgs = [{"role": "user", "content": [{"type": "video", "video": frames}]}]
    with pytest.raises(VideoTooLongError, match=str(model.max_frames)):
        model.chat(msgs)
    with Engine(model, max_batch=1, max_len=512) as engine, pytest.raises(VideoTooLongError):
        engine.submit(msgs)


def test_aspect_ratio_over_200_is_refused(model):
    msgs = [{"role": "user", "content": [{"type": "image", "image": random_image(2010, 10, 1)}]}]
    with pytest.raises(VislangError, match="200"):
        model.chat(msgs)


def test_corrupt_video_file_gets_vislangs_error(model, tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    msgs = [{"role": "user", "content": [{"type": "video", "video": str(bad)}]}]
    with pytest.raises(VislangError):
        model.chat(msgs)


def test_chat_and_ground_from_the_shell(model, tmp_path):
    """`vislang chat --model DIR IMAGE --video CLIP` answers as the library does; `vislang ground
    --model DIR` runs (a random model writes no box: exit 1 with the reason)."""
    import os
    import subprocess
    import sys

    from test_qwen2vl_serve import mp4_bytes

    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    image, clip = tmp_path / "pic.png", tmp_path / "clip.mp4"
    random_image(80, 50, 3).save(image)
    clip.write_bytes(mp4_bytes())
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "vislang", "chat", "--model", str(folder), str(image), "--video", str(clip)]
    out = subprocess.run(
        [*cmd, "-p", "describe it", "--max-new-tokens", "4"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    msgs = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": str(image)},
                {"type": "video", "video": str(clip)},
                {"type": "text", "text": "describe it"},
            ],
        }
    ]
    assert out.stdout.strip() == str(vislang.load(folder, fuse=True).chat(msgs, max_new_tokens=4))
    ground = [sys.executable, "-m", "vislang", "ground", "--model", str(folder), str(image), "the red circle"]
    out = subprocess.run(ground, capture_output=True, text=True, env=env)
    assert out.returncode in (0, 1), out.stderr
    assert "the red circle:" in out.stdout
