"""``gamelab-caption search IMAGE... --index FILE``: the games images show, with captions."""

from __future__ import annotations

import json
from dataclasses import asdict

from ..captioner import Captioner
from ..errors import BundleError, ImageError
from ..search import GameIndex
from .arguments import STDIN, error, image_source, model_parser, positive, stdin_problem


def main(argv: list[str]) -> int:
    """``gamelab-caption search IMAGE... --index FILE [--k 5] [--json]``, with captions."""
    parser = model_parser("search", "Find the games that images show, with their captions.")
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help=f"photos to look up; {STDIN} reads one from standard input",
    )
    parser.add_argument("--index", required=True, help="index file from 'index build'")
    parser.add_argument("-k", "--k", type=positive, default=5, help="games per image (default 5)")
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    try:
        args = parser.parse_args(argv)
        captioner = Captioner(args.model, threads=args.threads)
        index = GameIndex.load(args.index, captioner=captioner)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except (ValueError, ImportError) as problem:
        hint = " (choose the bundle with --model)" if isinstance(problem, BundleError) else ""
        return error(f"{problem}{hint}")
    if problem := stdin_problem(args.images):
        return error(problem)
    failed = False
    for image in args.images:
        source = image_source(image)
        try:
            hits = index.search(source, k=args.k)
            caption = captioner.caption(source).text
        except ImageError as problem:
            error(f"{image}: {problem}")
            failed = True
            continue
        if args.json:
            hits = [{**asdict(hit), "reason": hit.reason} for hit in hits]
            print(json.dumps({"image": image, "caption": caption, "hits": hits}), flush=True)
            continue
        print(f"{image}\t{caption}")
        for rank, hit in enumerate(hits, start=1):
            where = f"{hit.platform or '?'}, id {hit.game_id}"
            print(f"  {rank}. {hit.score:.3f}  {hit.name}  [{where}]  {hit.reason}", flush=True)
    return 1 if failed else 0
