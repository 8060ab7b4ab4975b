"""The ``gamelab-caption`` command: caption image files, index and search games, serve HTTP.

``gamelab-caption IMAGE [IMAGE ...]`` captions without a verb. Subcommands (``batch``,
``index``, ``search``, ``serve``) are dispatched on the first argument before the caption
parser runs, so adding one never changes how plain image paths are read. Each lives in its
own module, imported only when asked for (``serve`` alone imports FastAPI, ``batch`` Ray).
"""

from __future__ import annotations

import importlib
import sys

# argv[0] -> module whose main(rest of argv) returns the exit code
SUBCOMMANDS = {"batch": "batch", "index": "index", "search": "search", "serve": "serve"}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 some image failed, 2 usage).

    Args:
        argv: arguments without the program name; default ``sys.argv[1:]``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(f".{SUBCOMMANDS[argv[0]]}", __name__)
        return module.main(argv[1:])
    from .caption import main as caption

    return caption(argv)
