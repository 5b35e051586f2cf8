"""`vislang serve` and `vislang purge`.

vislang serve --model default --host 127.0.0.1 --port 8000 [--api-key KEY] [--weights int8]
vislang serve --allow-url-domain example.org --file-root ./pictures --retain ./kept --retain-days 7
vislang purge ./kept --days 7
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..generation.quantize import FORMATS


def cmd_serve(args) -> int:
    try:
        import uvicorn
    except ImportError:
        print("vislang serve needs the server extras: pip install 'vislang[serve]'", file=sys.stderr)
        return 2
    import logging

    import vislang

    from .app import ServerSettings, create_app
    from .images import FetchPolicy

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    server_log = logging.getLogger("vislang.serve")
    server_log.addHandler(handler)
    server_log.setLevel(logging.INFO)
    server_log.propagate = False  # uvicorn reconfigures the root logger
    model = vislang.load(None if args.model == "default" else args.model, weights=args.weights, fuse=True)
    if hasattr(model, "max_frames"):
        model.max_frames = args.max_frames
    settings = ServerSettings(
        model_name=args.model_name
        or ("vislang-default" if args.model == "default" else Path(args.model).name),
        api_key=args.api_key or os.environ.get("VISLANG_API_KEY"),
        max_body_bytes=args.max_body_mb << 20,
        max_images=args.max_images,
        max_batch=args.max_batch,
        max_len=args.max_len,
        kv_budget_bytes=args.kv_budget_mb << 20,
        fetch=FetchPolicy(
            allowed_domains=args.allow_url_domain, file_root=Path(args.file_root) if args.file_root else None
        ),
        cors_origins=args.cors_origin,
        retain_dir=Path(args.retain) if args.retain else None,
        retain_days=args.retain_days,
    )
    app = create_app(model, settings)
    # access logs name paths and status only; uvicorn's own access log would add client addresses
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="info")
    return 0


def cmd_purge(args) -> int:
    from .retention import purge

    print(f"removed {purge(args.folder, args.days)} files older than {args.days} days from {args.folder}")
    return 0


def add_serve_parser(subparsers) -> None:
    serve = subparsers.add_parser("serve", help="an OpenAI-compatible server with a web page")
    serve.add_argument("--model", default="default", help="'default' or a checkpoint folder")
    serve.add_argument("--model-name", default=None, help="the id /v1/models reports")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--weights", choices=FORMATS, default="fp32", help="the LM's weight format")
    serve.add_argument(
        "--api-key", default=None, help="require 'Authorization: Bearer KEY' (or $VISLANG_API_KEY)"
    )
    serve.add_argument("--max-body-mb", type=int, default=20)
    serve.add_argument("--max-images", type=int, default=8)
    serve.add_argument("--max-batch", type=int, default=8, help="requests decoded together")
    serve.add_argument(
        "--max-len",
        type=int,
        default=None,
        help="tokens per request, prompt and answer (default: the model's context)",
    )
    serve.add_argument(
        "--kv-budget-mb",
        type=int,
        default=4096,
        help="the most memory the KV cache may take (it grows with use)",
    )
    serve.add_argument("--max-frames", type=int, default=768, help="frames one video may give (video models)")
    serve.add_argument("--allow-url-domain", action="append", default=[], help="fetch http(s) images from it")
    serve.add_argument("--file-root", default=None, help="allow file:// image URLs under this folder")
    serve.add_argument("--cors-origin", action="append", default=[], help="allow browser calls from it")
    serve.add_argument("--retain", default=None, help="keep requests (metadata stripped) in this folder")
    serve.add_argument("--retain-days", type=float, default=7.0)
    serve.set_defaults(func=cmd_serve)

    purge = subparsers.add_parser("purge", help="delete retained requests older than --days")
    purge.add_argument("folder")
    purge.add_argument("--days", type=float, required=True)
    purge.set_defaults(func=cmd_purge)
