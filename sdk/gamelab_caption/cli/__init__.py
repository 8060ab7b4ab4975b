"""The ``gamelab-caption`` command: caption image files, index and search games, serve HTTP.

``gamelab-caption IMAGE [IMAGE ...]`` captions without a verb. Subcommands (``batch``,
``index``, ``search``, ``serve``) are dispatched on the first argument before the caption
parser runs, so adding one never changes how plain image paths are read. Each lives in its
own module, imported only when asked for (``serve`` alone imports FastAPI, ``batch`` Ray).
"""

from __future__ import annotations

import importlib
import os
import sys

from .arguments import SUBCOMMANDS


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 some image failed, 2 usage,
    141 the reader of the output went away, as in ``gamelab-caption DIR | head``).

    Args:
        argv: arguments without the program name; default ``sys.argv[1:]``.
    """
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        # Stop quietly, as Unix tools do, and keep Python from failing again when it flushes
        # stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a killed writer


def _run(argv: list[str]) -> int:
    if argv and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(f".{argv[0]}", __name__)
        return module.main(argv[1:])
    from .caption import main as caption

    return caption(argv)
