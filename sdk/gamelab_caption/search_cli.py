"""``gamelab-caption index build`` and ``gamelab-caption search``: game search from the shell."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from .bundle import DEFAULT_MODEL
from .captioner import Captioner
from .errors import BundleError, ImageError
from .search import GameIndex


def _command_parser(command: str) -> argparse.ArgumentParser:
    from .cli import PROG, _positive

    parser = argparse.ArgumentParser(prog=f"{PROG} {command}")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="bundled model name or folder")
    parser.add_argument("--threads", type=_positive, default=None, help="ONNX Runtime threads")
    return parser


def index_command(argv: list[str]) -> int:
    """``gamelab-caption index build CATALOG... -o FILE``: build and save an index."""
    from .cli import _error

    parser = _command_parser("index build")
    parser.add_argument("catalogs", nargs="+", metavar="CATALOG", help="gamelist.xml, .csv, .jsonl")
    parser.add_argument("-o", "--output", required=True, help="index file to write")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    try:
        if not argv or argv[0] != "build":
            parser.error("the only action is 'build': index build CATALOG... -o FILE")
        args = parser.parse_args(argv[1:])
        captioner = Captioner(args.model, threads=args.threads)
        index = GameIndex.build(args.catalogs, captioner=captioner, progress=not args.quiet)
        index.save(args.output)
    except SystemExit as exit_:  # argparse exits on --help and usage errors
        return int(exit_.code or 0)
    except (ValueError, ImportError, OSError) as error:  # BundleError is a ValueError
        _error(error)
        return 2
    report = index.report
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(report.skipped.items()))
    print(
        f"{args.output}: {len(index)} games, {report.built} of {report.entries} entries, "
        f"{report.images} images; skipped: {skipped or 'none'}"
    )
    return 0


def search_command(argv: list[str]) -> int:
    """``gamelab-caption search IMAGE... --index FILE [--k 5] [--json]``, with captions."""
    from .cli import _error, _positive

    parser = _command_parser("search")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="photos to look up")
    parser.add_argument("--index", required=True, help="index file from 'index build'")
    parser.add_argument("--k", type=_positive, default=5, help="games per image (default 5)")
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    try:
        args = parser.parse_args(argv)
        captioner = Captioner(args.model, threads=args.threads)
        index = GameIndex.load(args.index, captioner=captioner)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except (ValueError, ImportError) as error:
        _error(
            f"{error} (choose the bundle with --model)" if isinstance(error, BundleError) else error
        )
        return 2
    failed = False
    for image in args.images:
        try:
            hits = index.search(image, k=args.k)
            caption = captioner.caption(image).text
        except ImageError as error:
            _error(f"{image}: {error}")
            failed = True
            continue
        if args.json:
            hits = [asdict(hit) for hit in hits]
            print(json.dumps({"image": image, "caption": caption, "hits": hits}), flush=True)
            continue
        print(f"{image}\t{caption}")
        for rank, hit in enumerate(hits, start=1):
            where = f"{hit.platform or '?'}, id {hit.game_id}"
            print(f"  {rank}. {hit.score:.3f}  {hit.name}  [{where}]", flush=True)
    return 1 if failed else 0
