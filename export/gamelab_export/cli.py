"""`gamelab-export STAGE [--config run.yaml] [--key=value ...] [--force]`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import pipeline
from .config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gamelab-export",
        description="Train and package captioning models: "
        + " -> ".join(pipeline.STAGES)
        + "; 'all' runs them in order. "
        "Any TrainConfig field can be set with --key=value.",
    )
    parser.add_argument("stage", choices=[*pipeline.STAGES, "all"])
    parser.add_argument("--config", help="YAML file of TrainConfig fields")
    parser.add_argument("--force", action="store_true", help="redo the stage even if done")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args, overrides = parser.parse_known_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, overrides)
    except ValueError as error:
        parser.error(str(error))
    if args.stage == "all":
        pipeline.run_all(config, args.force, progress=not args.quiet)
    else:
        pipeline.run_stage(args.stage, config, args.force, progress=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
