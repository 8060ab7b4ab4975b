"""``gamelab-caption index build CATALOG... -o FILE``: index a game catalogue for search."""

from __future__ import annotations

from ..captioner import Captioner
from ..search import GameIndex
from .arguments import error, model_parser


def main(argv: list[str]) -> int:
    """``gamelab-caption index build CATALOG... -o FILE``: build and save an index."""
    parser = model_parser("index build", "Index a game catalogue for image search.")
    parser.add_argument("catalogs", nargs="+", metavar="CATALOG", help="gamelist.xml, .csv, .jsonl")
    parser.add_argument("-o", "--output", required=True, help="index file to write")
    parser.add_argument(
        "--media",
        action="append",
        default=[],
        metavar="DIR",
        help="media folder: an ES-DE downloaded_media folder, or a libretro-thumbnails system "
        "folder (Named_Boxarts, Named_Snaps, ...); repeatable",
    )
    parser.add_argument(
        "--no-text", action="store_true", help="do not read title text in images (faster build)"
    )
    parser.add_argument(
        "--embeddings",
        default=None,
        metavar="DIR",
        help="output of 'gamelab-caption batch --catalog' on these catalogues: use its "
        "vectors and texts instead of computing them here (the same index)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    try:
        if not argv or argv[0] != "build":
            parser.error("the only action is 'build': index build CATALOG... -o FILE")
        args = parser.parse_args(argv[1:])
        captioner = Captioner(args.model, threads=args.threads)
        index = GameIndex.build(
            args.catalogs,
            media_dirs=args.media,
            captioner=captioner,
            progress=not args.quiet,
            read_text=False if args.no_text else None,
            embeddings=args.embeddings,
        )
        index.save(args.output)
    except SystemExit as exit_:  # argparse exits on --help and usage errors
        return int(exit_.code or 0)
    except (ValueError, ImportError, OSError) as problem:  # BundleError is a ValueError
        return error(problem)
    report = index.report
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(report.skipped.items()))
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(report.kinds.items()))
    texts = sum(bool(image.text) for image in index.images)
    print(
        f"{args.output}: {len(index)} games, {report.built} of {report.entries} entries, "
        f"{report.images} images ({kinds or 'none'}), text read in {texts}; "
        f"skipped: {skipped or 'none'}"
    )
    return 0
