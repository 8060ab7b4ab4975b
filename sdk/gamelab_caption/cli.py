"""The ``gamelab-caption`` command: caption image files from a shell.

``gamelab-caption IMAGE [IMAGE ...]`` captions without a verb. Subcommands (``index``,
``search``, ``serve``) are dispatched on the first argument before the caption parser runs,
so adding one never changes how plain image paths are read.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable

from .bundle import DEFAULT_MODEL, bundled_models
from .captioner import BATCH_SIZE, Captioner, CaptionResult
from .errors import BundleError
from .version import __version__

PROG = "gamelab-caption"
# argv[0] -> handler(rest of argv) -> exit code. Filled as subcommands are added.
SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Caption images with an ONNX model bundle."
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files to caption")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"bundled model name or bundle folder (default: {DEFAULT_MODEL})",
    )
    parser.add_argument("--beam", type=_positive, default=3, help="beam size; 1 is greedy")
    parser.add_argument(
        "--max-length",
        type=_positive,
        default=None,
        help="most words per caption (default: from the bundle)",
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        default=None,
        help="ONNX Runtime intra-op threads (default: chosen by ONNX Runtime)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print JSON lines {"image", "caption", "score", "alternatives"}',
    )
    parser.add_argument("--list-models", action="store_true", help="list bundled models")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


def _error(message: str) -> None:
    one_line = " ".join(str(message).split())
    print(f"{PROG}: error: {one_line}", file=sys.stderr)


def _finite(score: float) -> float | None:
    return score if math.isfinite(score) else None  # JSON has no -Infinity


def _format(path: str, result: CaptionResult, as_json: bool) -> str:
    if not as_json:
        return f"{path}\t{result.text}"
    return json.dumps(
        {
            "image": path,
            "caption": result.text,
            "score": _finite(result.score),
            "alternatives": [
                {"caption": text, "score": _finite(score)} for text, score in result.alternatives
            ],
        }
    )


def _caption(args: argparse.Namespace) -> int:
    try:
        captioner = Captioner(args.model, threads=args.threads)
    except (BundleError, ValueError) as error:
        _error(error)
        return 2
    failed = False
    # One caption_batch chunk at a time, so captions print as they are made.
    for start in range(0, len(args.images), BATCH_SIZE):
        paths = args.images[start : start + BATCH_SIZE]
        results = captioner.caption_batch(paths, beam_size=args.beam, max_length=args.max_length)
        for path, result in zip(paths, results, strict=True):
            if result.error is not None:
                failed = True
                _error(f"{path}: {result.error}")
            else:
                print(_format(path, result, args.json), flush=True)
    return 1 if failed else 0


def _serve(argv: list[str]) -> int:
    from .server.command import main as serve  # FastAPI is imported only to serve

    return serve(argv)


SUBCOMMANDS["serve"] = _serve


def _index(argv: list[str]) -> int:
    from .search_cli import index_command

    return index_command(argv)


def _search(argv: list[str]) -> int:
    from .search_cli import search_command

    return search_command(argv)


SUBCOMMANDS.update(index=_index, search=_search)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 some image failed, 2 usage).

    Args:
        argv: arguments without the program name; default ``sys.argv[1:]``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if not args.images and not args.list_models:
            parser.error("give at least one IMAGE, or --list-models")
    except SystemExit as exit_:  # argparse exits on --help, --version and usage errors
        return int(exit_.code or 0)
    if args.list_models:
        for name in bundled_models():
            print(name)
        return 0
    return _caption(args)


if __name__ == "__main__":
    sys.exit(main())
