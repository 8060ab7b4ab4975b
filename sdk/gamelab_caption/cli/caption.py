"""``gamelab-caption IMAGE...``: caption image files, printed as they are made."""

from __future__ import annotations

import argparse
import json
import math
import os

from ..batch_inputs import IMAGE_SUFFIXES, folder_images
from ..bundle import DEFAULT_MODEL, bundled_models
from ..captioner import BATCH_SIZE, Captioner, CaptionResult
from ..errors import BundleError
from ..version import __version__
from .arguments import (
    PROG,
    STDIN,
    SUBCOMMANDS,
    caption_length,
    error,
    image_source,
    positive,
    stdin_problem,
)


def build_parser() -> argparse.ArgumentParser:
    commands = "\n".join(f"  {name:8s}{summary}" for name, summary in SUBCOMMANDS.items())
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Caption images with an ONNX model bundle.",
        epilog=f"other commands ({PROG} COMMAND --help):\n{commands}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "images",
        nargs="*",
        metavar="IMAGE",
        help="image files to caption, or folders: their images, subfolders included; "
        f"{STDIN} reads one image from standard input",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"bundled model name or bundle folder (default: {DEFAULT_MODEL})",
    )
    parser.add_argument("--beam", type=positive, default=3, help="beam size; 1 is greedy")
    parser.add_argument(
        "--max-length",
        type=caption_length,
        default=None,
        help="most words per caption (default: from the bundle)",
    )
    parser.add_argument(
        "--threads",
        type=positive,
        default=None,
        help="ONNX Runtime intra-op threads (default: chosen by ONNX Runtime)",
    )
    parser.add_argument(
        "--decoder-words",
        action="store_true",
        help="keep the decoder's animal words (default: the animal the encoder's ImageNet "
        "head sees is named, as 'cat' for what the decoder calls a dog)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print JSON lines {"image", "caption", "score", "alternatives"}',
    )
    parser.add_argument("--list-models", action="store_true", help="list bundled models")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


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


def main(argv: list[str]) -> int:
    """Caption the images; returns the exit code (0 ok, 1 some image failed, 2 usage)."""
    parser = build_parser()
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
    if problem := stdin_problem(args.images):
        return error(problem)
    try:
        captioner = Captioner(args.model, threads=args.threads)
    except (BundleError, ValueError) as problem:
        return error(problem)
    images, failed = [], False  # the paths as given, STDIN for standard input's image
    for argument in args.images:
        if not os.path.isdir(argument):
            images.append(argument)
        elif found := folder_images(argument):
            images += found
        else:
            failed = True
            error(f"{argument}: a folder with no image files ({', '.join(IMAGE_SUFFIXES)})")
    # One caption_batch chunk at a time, so captions print as they are made.
    for start in range(0, len(images), BATCH_SIZE):
        paths = images[start : start + BATCH_SIZE]
        inputs = [image_source(path) for path in paths]
        results = captioner.caption_batch(
            inputs,
            beam_size=args.beam,
            max_length=args.max_length,
            name_animals=not args.decoder_words,
        )
        for path, result in zip(paths, results, strict=True):
            if result.error is not None:
                failed = True
                error(f"{path}: {result.error}")
            else:
                print(_format(path, result, args.json), flush=True)
    return 1 if failed else 0
