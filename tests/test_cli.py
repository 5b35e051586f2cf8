"""The command line, run as a user would: `python -m vislang ...` in a subprocess."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from transformers import LlavaConfig, LlavaForConditionalGeneration
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

import vislang
from tiny import IMAGE_TOKEN, TEMPLATE, TEXT, VISION, tokenizer_dir


def run(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vislang", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_info_names_versions_and_assets():
    out = run("info")
    assert out.returncode == 0, out.stderr
    assert f"vislang   {vislang.__version__}" in out.stdout
    assert "torch" in out.stdout and "threads" in out.stdout
    assert "MobileNetV2" in out.stdout and "SmolLM2" in out.stdout


def test_chat_answers_like_the_library(tmp_path):
    cfg = LlavaConfig(text_config=TEXT["llama_gqa"], vision_config=VISION, image_token_index=IMAGE_TOKEN)
    LlavaForConditionalGeneration(cfg).save_pretrained(tmp_path)
    tokenizer_dir(tmp_path)
    CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(
        tmp_path
    )
    (tmp_path / "chat_template.jinja").write_text(TEMPLATE)
    image = tmp_path / "pic.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(image)
    out = run(
        "chat",
        "--model",
        str(tmp_path),
        str(image),
        "-p",
        "what is in the picture ?",
        "--max-new-tokens",
        "6",
    )
    assert out.returncode == 0, out.stderr
    msg = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": str(image)},
                {"type": "text", "text": "what is in the picture ?"},
            ],
        }
    ]
    assert out.stdout.strip() == str(vislang.load(tmp_path).chat(msg, max_new_tokens=6))


def test_chat_with_a_corrupt_image_fails_cleanly(tmp_path):
    cfg = LlavaConfig(text_config=TEXT["llama_gqa"], vision_config=VISION, image_token_index=IMAGE_TOKEN)
    LlavaForConditionalGeneration(cfg).save_pretrained(tmp_path)
    tokenizer_dir(tmp_path)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = run("chat", "--model", str(tmp_path), str(bad), "-p", "hello")
    assert out.returncode == 2
    assert out.stderr.startswith("vislang: error:") and "Traceback" not in out.stderr


def test_unknown_model_type_from_the_shell(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "paligemma"}')
    out = run("chat", "--model", str(tmp_path), "-p", "hi")
    assert out.returncode == 2 and "llava_next" in out.stderr


def test_bench_formats_are_checked_by_the_parser():
    from vislang.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["bench", "--formats", "fp32,int8-full"]).formats == ("fp32", "int8-full")
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--formats", "fp32,fp8"])


def test_decode_roofline_pairs_each_run_with_the_bandwidth_beside_it(monkeypatch):
    """Each repetition is divided by the higher of the samples around it; the stricter reading
    divides by the highest sample of all."""
    from vislang import bench

    clock = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    samples = iter([50e9, 40e9, 100e9, 20e9])  # repetition 1: before, after; repetition 2: ...
    monkeypatch.setattr(bench, "read_bandwidth", lambda repeats=3: next(samples))

    def run(n):  # 10 ms per token, whatever n
        clock[0] += 0.01 * n

    d = bench.decode_roofline(run, weight_bytes=250_000_000, new_tokens=64, repeats=2)
    assert abs(d["tokens_per_s"] - 100.0) < 1e-9  # 64 tokens in 0.65 - 0.01 s (the 1-token run, best of 3)
    assert abs(d["GBps"] - 25.0) < 1e-9
    assert abs(d["roofline"] - 0.5) < 1e-9  # 25 / max(50, 40); repetition 2 gives 25 / 100
    assert abs(d["roofline_vs_highest"] - 0.25) < 1e-9
    assert d["bandwidth_samples_GBps"] == [50.0, 40.0, 100.0, 20.0]
