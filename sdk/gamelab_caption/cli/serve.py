"""``gamelab-caption serve``: load the model (and a game index), then run uvicorn.

This module imports FastAPI and uvicorn only inside ``main``, so ``gamelab-caption`` works
without the ``serve`` extra and says how to install it when ``serve`` is asked for.
"""

from __future__ import annotations

import argparse

from ..bundle import DEFAULT_MODEL
from ..captioner import Captioner
from ..errors import BundleError
from .arguments import PROG as MAIN_PROG
from .arguments import at_least, error

PROG = f"{MAIN_PROG} serve"
INSTALL_HINT = "pip install 'gamelab-caption-sdk[serve]'"
_SERVE_MODULES = {"fastapi", "starlette", "pydantic", "uvicorn", "python_multipart"}
CONNECTION_LIMIT = 256  # open connections; uvicorn answers 503 itself beyond this


def build_parser(default_queue: int, default_upload: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Serve the caption API and the upload page over HTTP."
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument("--port", type=at_least(0), default=8000, help="(default: %(default)s)")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="bundled model name or bundle folder (default: %(default)s)",
    )
    parser.add_argument("--index", default=None, help="a saved game index for /v1/search")
    parser.add_argument(
        "--workers",
        type=at_least(1),
        default=None,
        help="inference threads (default: the cores this process may use)",
    )
    parser.add_argument(
        "--threads",
        type=at_least(1),
        default=1,
        help="ONNX Runtime threads per inference (default: 1, as the workers fill the cores)",
    )
    parser.add_argument(
        "--queue-size",
        type=at_least(0),
        default=default_queue,
        help="requests waiting for a worker before 503 (default: %(default)s)",
    )
    parser.add_argument(
        "--max-pixels",
        type=at_least(1),
        default=None,
        help="largest image in pixels, checked before decoding (default: the SDK's, 50 MP)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=at_least(1),
        default=default_upload // 2**20,
        help="largest upload in MiB (default: %(default)s)",
    )
    return parser


def main(argv: list[str]) -> int:
    """Run the server until interrupted; returns the exit code (2 on a usage error)."""
    try:
        import uvicorn

        from ..server.app import DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_QUEUE_SIZE, create_app
    except ModuleNotFoundError as missing:
        if missing.name not in _SERVE_MODULES:
            raise
        return error(
            f"{missing.name} is not installed; install the server with: {INSTALL_HINT}", PROG
        )
    parser = build_parser(DEFAULT_QUEUE_SIZE, DEFAULT_MAX_UPLOAD_BYTES)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help and usage errors
        return int(exit_.code or 0)
    try:
        limits = {} if args.max_pixels is None else {"max_pixels": args.max_pixels}
        captioner = Captioner(args.model, threads=args.threads, **limits)
        index = None
        if args.index is not None:
            from ..search import GameIndex

            index = GameIndex.load(args.index, captioner=captioner)  # one set of sessions
    except (BundleError, ValueError, OSError) as problem:
        return error(problem, PROG)
    app = create_app(
        captioner,
        index,
        max_upload_bytes=args.max_upload_mb * 2**20,
        workers=args.workers,
        queue_size=args.queue_size,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        limit_concurrency=CONNECTION_LIMIT,
        server_header=False,
        log_level="info",
    )
    return 0
