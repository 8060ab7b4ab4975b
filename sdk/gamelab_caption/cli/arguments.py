"""What every ``gamelab-caption`` subcommand shares: the program name, argument types, errors."""

from __future__ import annotations

import argparse
import sys

from ..bundle import DEFAULT_MODEL
from ..captioner import MAX_LENGTH

PROG = "gamelab-caption"
# The verbs besides captioning (each a module of this package, main(argv) -> exit code), as
# the caption command's --help lists them.
SUBCOMMANDS = {
    "search": "find the games that images show (needs an index)",
    "index": "index build: index a game catalogue for search",
    "serve": "run the HTTP API and upload page (the serve extra)",
    "batch": "caption and embed many images on Ray (the ray extra)",
}
STDIN = "-"  # the image argument that reads the image's bytes from standard input


def at_least(minimum: int, maximum: int | None = None):
    """An argparse type: an integer >= ``minimum`` (and <= ``maximum`` when given)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {value}")
        return value

    return parse


positive = at_least(1)
caption_length = at_least(1, MAX_LENGTH)  # --max-length: DecodeOptions' range


def stdin_problem(images: list[str]) -> str | None:
    """Why the image arguments cannot read standard input (STDIN given twice, or given with
    nothing piped in: it would wait on the terminal), or None."""
    if STDIN not in images:
        return None
    if images.count(STDIN) > 1:
        return f"{STDIN} (standard input) can be given once"
    if sys.stdin is None or sys.stdin.isatty():
        return f"{STDIN} reads an image piped to standard input, but none is piped"
    return None


def image_source(argument: str) -> str | bytes:
    """What an image argument names: a path, or for STDIN the bytes piped in (read once:
    ``stdin_problem`` allows STDIN once)."""
    return sys.stdin.buffer.read() if argument == STDIN else argument


def error(message: object, prog: str = PROG) -> int:
    """Print ``prog: error: message`` on one line to stderr; returns the usage exit code, 2."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def model_parser(command: str, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand's parser with the options every model-loading command takes."""
    parser = argparse.ArgumentParser(prog=f"{PROG} {command}", description=description)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="bundled model name or folder")
    parser.add_argument("--threads", type=positive, default=None, help="ONNX Runtime threads")
    return parser
