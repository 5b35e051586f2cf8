"""`vislang index`, `vislang search`, `vislang classify`: find your own images by text or by example.

vislang index photos/ --out photos.index [--model M] [--batch-size 32]
vislang search photos.index "a red circle at the top" [-k 10] [--html results.html]
vislang search photos.index --image query.png
vislang classify photo.jpg --labels cat,dog,car [--template "a photo of a {}."]
"""

from __future__ import annotations

import sys
from pathlib import Path

from .embedder import DEFAULT_MODEL

MODEL_HELP = (
    f"a dual-encoder checkpoint folder (CLIP, SigLIP, ...) or a model name (default: {DEFAULT_MODEL})"
)


def cmd_index(args) -> int:
    from .embedder import load_embedder, model_name
    from .index import MANIFEST, ImageIndex, IndexConfig, model_identity

    model = load_embedder(args.model)
    identity = model_identity(model, model_name(args.model))
    if (Path(args.out) / MANIFEST).is_file():
        index = ImageIndex.open(args.out)
        index.check_model(identity)
    else:
        index = ImageIndex.create(identity, IndexConfig(backend=args.backend))
    stats = index.update(args.dir, model, batch_size=args.batch_size, progress=sys.stderr.isatty())
    index.save(args.out)
    print(
        f"indexed {len(index)} images in {args.out}: {stats.added} new, {stats.changed} changed, "
        f"{stats.removed} removed, {stats.unchanged} unchanged, {len(stats.skipped)} unreadable "
        f"(embedding {stats.embed_seconds:.1f} s, index {stats.index_seconds:.2f} s)"
    )
    return 0


def cmd_search(args) -> int:
    from .embedder import load_embedder, model_name
    from .index import ImageIndex, embed_query, model_identity
    from .page import results_page

    index = ImageIndex.open(args.index)
    spec = args.model or index.model["name"]
    model = load_embedder(spec)
    index.check_model(model_identity(model, model_name(spec)))  # the weights may have changed since
    hits = index.search(embed_query(model, text=args.query, image=args.image), args.k)[0]
    for hit in hits:
        print(f"{hit.score:.4f}  {hit.path}")
    if args.html:
        query = args.query if args.query is not None else f"images like {args.image}"
        Path(args.html).write_text(results_page(query, hits, query_image=args.image), encoding="utf-8")
        print(f"wrote {args.html}")
    return 0


def cmd_classify(args) -> int:
    from .classify import DEFAULT_TEMPLATES, zero_shot
    from .embedder import load_embedder

    model = load_embedder(args.model)
    probs = zero_shot(model, args.image, args.labels.split(","), args.template or DEFAULT_TEMPLATES)
    for label, prob in sorted(probs.items(), key=lambda item: -item[1]):
        print(f"{prob:.4f}  {label}")
    return 0


def add_search_parser(sub) -> None:
    index = sub.add_parser("index", help="embed every image under a folder into a searchable index")
    index.add_argument("dir", help="the folder of images (searched recursively)")
    index.add_argument("--out", required=True, help="the index folder; an existing one is brought up to date")
    index.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    index.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    index.add_argument(
        "--backend", choices=("faiss", "exact"), default="faiss", help="vector store (exact: numpy)"
    )
    index.set_defaults(func=cmd_index)

    search = sub.add_parser("search", help="find indexed images by a text or by an example image")
    search.add_argument("index", help="an index folder written by `vislang index`")
    search.add_argument("query", nargs="?", help='what to look for, e.g. "a red circle at the top"')
    search.add_argument("--image", help="search with this image instead of a text")
    search.add_argument("-k", type=int, default=10, help="how many results")
    search.add_argument("--model", help="the model (default: the one that built the index)")
    search.add_argument("--html", help="also write the results as a page with thumbnails")
    search.set_defaults(func=cmd_search)

    classify = sub.add_parser("classify", help="zero-shot: which of some labels fits an image best")
    classify.add_argument("image")
    classify.add_argument("--labels", required=True, help="comma-separated, e.g. cat,dog,car")
    classify.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    classify.add_argument(
        "--template",
        action="append",
        help='a prompt with {} for the label; repeat to average several (default: "a photo of a {}.")',
    )
    classify.set_defaults(func=cmd_classify)
