"""``gamelab-caption batch INPUT... --output DIR``: caption and embed images on Ray.

Ray and pyarrow (the ``ray`` extra) are imported when the job starts, so ``--help`` and
usage errors work without them, and their absence is reported with the install command.
"""

from __future__ import annotations

import argparse

from ..bundle import DEFAULT_MODEL
from ..captioner import BATCH_SIZE
from ..errors import BatchClusterError
from .arguments import PROG, at_least, caption_length, error, positive


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} batch",
        description="Caption and embed images on a Ray cluster (local by default); one "
        "Parquet row per image. A re-run with the same --output does only what is missing.",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image folders (recursive), globs, images, or tables (.parquet, .csv, .jsonl) "
        "with a column of image paths; with --catalog, game catalogues",
    )
    parser.add_argument("-o", "--output", required=True, help="output folder of Parquet parts")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="bundled model name or folder")
    parser.add_argument("--no-caption", action="store_true", help="embeddings only")
    parser.add_argument("--no-embed", action="store_true", help="captions only")
    parser.add_argument("--beam", type=positive, default=3, help="beam size; 1 is greedy")
    parser.add_argument("--max-length", type=caption_length, default=None, help="most words")
    parser.add_argument(
        "--path-column", default="path", help="column of image paths in tables (default: path)"
    )
    parser.add_argument(
        "--catalog",
        action="store_true",
        help="INPUTs are game catalogues: embed their media as 'index build' does (with "
        "simulated photos and title text), for 'index build --embeddings'",
    )
    parser.add_argument(
        "--media", action="append", default=[], metavar="DIR", help="--catalog media folder"
    )
    parser.add_argument("--no-text", action="store_true", help="--catalog: read no title text")
    parser.add_argument("--address", default=None, help="Ray cluster to join (default: local)")
    parser.add_argument("--actors", type=positive, default=None, help="actors (default: fill)")
    parser.add_argument("--num-cpus", type=_positive_float, default=1.0, help="CPUs per actor")
    parser.add_argument(
        "--num-gpus", type=_non_negative_float, default=0.0, help="GPUs per actor (CUDA)"
    )
    parser.add_argument(
        "--batch-size", type=at_least(1), default=BATCH_SIZE, help="images per actor call"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str]) -> int:
    """Run the job; returns the exit code (0 ok, 1 some image failed, 2 usage or input)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help and usage errors
        return int(exit_.code or 0)
    from ..batch import BatchOptions, run

    try:
        options = BatchOptions(
            model=args.model,
            caption=not args.no_caption,
            embed=not args.no_embed,
            beam_size=args.beam,
            max_length=args.max_length,
            catalog=args.catalog,
            media_dirs=tuple(args.media),
            read_text=False if args.no_text else None,
            path_column=args.path_column,
            batch_size=args.batch_size,
            actors=args.actors,
            num_cpus=args.num_cpus,
            num_gpus=args.num_gpus,
        )
        progress = not args.quiet
        report = run(args.inputs, args.output, options, address=args.address, progress=progress)
    except (ValueError, ImportError, OSError, BatchClusterError) as problem:
        return error(problem, f"{PROG} batch")
    print(
        f"{report.output}: {report.processed} images in {report.seconds:.1f} s "
        f"({report.images_per_second:.1f} images/s, {report.actors} actors), "
        f"{report.errors} unusable; {report.skipped} of {report.images} were done before"
    )
    return 1 if report.errors else 0
