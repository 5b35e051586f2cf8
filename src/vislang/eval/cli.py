"""`vislang eval ...`: score models on the visual world, under shifts, for hallucination, on a dataset.

vislang eval world --model default --families scene,fashion,digits --n 500 --out report.json
vislang eval robustness --model default --shifts jpeg,blur,mirror --n 500 --report out/report.html
vislang eval pope --endpoint http://localhost:8000/v1 --endpoint-model qwen2-vl --n 100
vislang eval dataset my_vqa.jsonl --model default --metric vqa
vislang eval icl --model default --shots 0,1,2,4 --n 200

Models: --model (a checkpoint folder or "default", repeatable) and --endpoint URL --endpoint-model NAME
(any OpenAI-compatible server, repeatable); several models give side-by-side columns.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..data.cli import non_negative_int, positive_int
from ..generation.quantize import FORMATS


def _families(text: str) -> tuple[str, ...]:
    from vislang.data.world import FAMILIES

    families = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise argparse.ArgumentTypeError(f"unknown families {unknown}; families: {', '.join(FAMILIES)}")
    return families


def engine_runner(model, max_batch: int):
    """A local chat model behind the continuous-batching engine (1.5-2x a static batch on world
    questions, whose answers range from one token to a caption); anything else as it is."""
    from vislang.models.chat import ChatMixin

    if not isinstance(model, ChatMixin):
        return model
    from .runner import EngineRunner

    return EngineRunner(model, max_batch=min(max_batch, 32))


def load_models(args) -> dict[str, object]:
    """name -> model for every --model and --endpoint, in the order given."""
    import vislang

    models: dict[str, object] = {}
    endpoints = args.endpoint or []
    names = args.endpoint_model or []
    if len(names) != len(endpoints):
        raise SystemExit("give one --endpoint-model NAME for each --endpoint URL")
    local = args.model or ([] if endpoints else ["default"])
    for spec in local:
        model = vislang.load(None if spec == "default" else spec, weights=args.weights, fuse=True)
        models[spec] = engine_runner(model, args.batch_size)
    if endpoints:
        from .endpoint import EndpointModel

        key = None
        if args.api_key_env:
            key = os.environ.get(args.api_key_env)
            if not key:
                raise SystemExit(f"--api-key-env {args.api_key_env}: that environment variable is not set")
        for url, name in zip(endpoints, names):
            model = EndpointModel(url, name, api_key=key, concurrency=args.concurrency)
            models[model.name] = model
    return models


def write_json(result: dict, path: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {path}", file=sys.stderr)


def write_outputs(result: dict, args) -> None:
    from .html_report import to_json_safe, write_html

    if args.json:
        write_json(to_json_safe(result), args.json)
    if args.report:
        print(f"wrote {write_html(result, args.report)}", file=sys.stderr)


def cmd_eval_world(args) -> int:
    from .world import evaluate_world, format_report, write_report

    reports = {}
    for name, model in load_models(args).items():
        reports[name] = report = evaluate_world(
            model,
            families=args.families,
            n=args.n,
            seed=args.seed,
            paraphrase=args.paraphrase,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
        )
        print(f"== {name}")
        print(format_report(report))
    if args.out:  # one model: its report; several: {"models": {name: report}}, none overwriting another
        result = next(iter(reports.values())) if len(reports) == 1 else {"models": reports}
        print(f"wrote {write_report(result, args.out)}", file=sys.stderr)
    return 0


def cmd_eval_robustness(args) -> int:
    from .robustness import evaluate_robustness, format_summary, shifts_named

    try:
        shifts = shifts_named(args.shifts)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    result = evaluate_robustness(
        load_models(args),
        shifts,
        families=args.families,
        n=args.n,
        seed=args.seed,
        severities=args.severities,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        pope_images=args.pope,
    )
    print(format_summary(result))
    print(f"{result['config']['seconds']:.0f} s", file=sys.stderr)
    write_outputs(result, args)
    return 0


def cmd_eval_pope(args) -> int:
    from .pope import evaluate_pope
    from .robustness import format_summary

    models = load_models(args)
    pope = {
        name: evaluate_pope(model, n_images=args.n, seed=args.seed, batch_size=args.batch_size)
        for name, model in models.items()
    }
    result = {"models": list(models), "shifts": [], "pope": pope, "config": {"n": args.n, "seed": args.seed}}
    print(format_summary(result))
    write_outputs(result, args)
    return 0


def cmd_eval_dataset(args) -> int:
    from .dataset_eval import evaluate_dataset

    models = load_models(args)
    reports = {}
    for name, model in models.items():
        reports[name] = evaluate_dataset(
            model,
            args.path,
            metric=args.metric,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            limit=args.limit,
        )
        summary = {k: v for k, v in reports[name].items() if k not in ("rows", "misses")}
        print(f"== {name}\n{json.dumps(summary, indent=1, default=str)}")
    result = {"models": list(models), "shifts": [], "dataset": reports, "config": {"path": str(args.path)}}
    write_outputs(result, args)
    return 0


def cmd_eval_icl(args) -> int:
    from .icl import evaluate_icl, format_icl

    for name, model in load_models(args).items():
        result = evaluate_icl(
            model,
            tasks=args.tasks,
            shots=args.shots,
            n=args.n,
            seed=args.seed,
            batch_size=args.batch_size,
            layout=args.layout,
            max_new_tokens=args.max_new_tokens,
        )
        print(f"== {name}\n{format_icl(result)}")
        if args.json:
            write_json(result, args.json)
    return 0


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def add_model_arguments(parser: argparse.ArgumentParser, batch_size: int = 16) -> None:
    parser.add_argument("--model", action="append", help="'default' or a checkpoint folder (repeatable)")
    parser.add_argument("--endpoint", action="append", help="an OpenAI-compatible base URL ending in /v1")
    parser.add_argument("--endpoint-model", action="append", help="the model name to ask each endpoint for")
    parser.add_argument("--api-key-env", default=None, help="the environment variable holding the API key")
    parser.add_argument("--concurrency", type=positive_int, default=8, help="requests in flight per endpoint")
    parser.add_argument("--weights", choices=FORMATS, default="fp32", help="a local LM's weight format")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size)
    parser.add_argument("--seed", type=non_negative_int, default=0)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report", default=None, help="write a self-contained HTML report here")
    parser.add_argument("--json", default=None, help="write the full result as JSON here")


def cmd_eval_retrieval(args) -> int:
    import vislang

    from .retrieval import label_accuracy, scene_recall

    progress = not os.environ.get("CI")
    model = vislang.load(args.model)
    result = {"model": args.model, "scenes": scene_recall(model, args.scenes, progress=progress)}
    if args.classify:
        for dataset in ("fashion", "digits"):
            result[dataset] = label_accuracy(model, dataset, args.classify, progress=progress)
    print(json.dumps(result, indent=2))
    if args.json:
        write_json(result, args.json)
    return 0


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Add `eval world|robustness|pope|dataset` to an argparse subparsers object."""
    evaluate = subparsers.add_parser("eval", help="evaluate a model")
    sub = evaluate.add_subparsers(dest="eval_command", required=True)

    world = sub.add_parser("world", help="accuracy on the visual world's test split, per family and qtype")
    add_model_arguments(world)
    world.add_argument(
        "--families", type=_families, default=("scene", "fashion", "digits"), help="comma-separated"
    )
    world.add_argument("--n", type=positive_int, default=500, help="samples per family")
    world.add_argument("--paraphrase", choices=("canonical", "heldout"), default="canonical")
    world.add_argument("--out", default=None, help="write the report as JSON here")
    world.add_argument("--max-new-tokens", type=positive_int, default=24)
    world.set_defaults(func=cmd_eval_world)

    robust = sub.add_parser(
        "robustness", help="the world's questions under resolution, quality, layout, domain shifts"
    )
    add_model_arguments(robust)
    robust.add_argument("--families", type=_families, default=("scene",), help="comma-separated")
    robust.add_argument("--shifts", default="all", help="comma-separated shift names, or 'all'")
    robust.add_argument(
        "--severities", type=positive_int, default=3, help="severities per shift beyond clean"
    )
    robust.add_argument("--n", type=positive_int, default=500, help="samples per family")
    robust.add_argument(
        "--pope", type=non_negative_int, default=0, help="also the POPE probe on this many images"
    )
    robust.add_argument("--max-new-tokens", type=positive_int, default=24)
    add_output_arguments(robust)
    robust.set_defaults(func=cmd_eval_robustness)

    pope = sub.add_parser("pope", help="object hallucination in POPE's protocol on world scenes")
    add_model_arguments(pope)
    pope.add_argument("--n", type=positive_int, default=100, help="images")
    add_output_arguments(pope)
    pope.set_defaults(func=cmd_eval_pope)

    icl = sub.add_parser("icl", help="in-context learning: labels defined only by k examples in the prompt")
    add_model_arguments(icl)
    icl.add_argument(
        "--tasks", type=lambda t: tuple(x for x in t.split(",") if x), default=("colors", "garments")
    )
    icl.add_argument("--shots", type=_ints, default=(0, 1, 2, 4), help="comma-separated k")
    icl.add_argument("--n", type=positive_int, default=200, help="queries per task and k")
    icl.add_argument("--layout", choices=("turns", "interleaved"), default="turns")
    icl.add_argument("--max-new-tokens", type=positive_int, default=8)
    icl.add_argument("--json", default=None, help="write the result as JSON here")
    icl.set_defaults(func=cmd_eval_icl)
    retrieval = sub.add_parser("retrieval", help="a dual encoder: Recall@k on world scenes, zero-shot labels")
    retrieval.add_argument("--model", default="retrieval")
    retrieval.add_argument("--scenes", type=int, default=1000)
    retrieval.add_argument("--classify", type=int, default=1000, help="test images per dataset")
    retrieval.add_argument("--json", default=None)
    retrieval.set_defaults(func=cmd_eval_retrieval)

    dataset = sub.add_parser("dataset", help="a local VQA-style file: JSONL, CSV, parquet or arrow")
    dataset.add_argument("path", help="the dataset file")
    add_model_arguments(dataset)
    dataset.add_argument("--metric", default=None, help="vqa, exact, anls, iou or caption (default: per row)")
    dataset.add_argument("--limit", type=positive_int, default=None, help="the first N rows only")
    dataset.add_argument("--max-new-tokens", type=positive_int, default=32)
    add_output_arguments(dataset)
    dataset.set_defaults(func=cmd_eval_dataset)
    return evaluate
