"""Write tests/golden/captions.json: each shipped bundle's exact captions of the golden photos.

Run it when a bundle or the decoding changes, read the diff, and commit it with the change:

    python tests/golden/regenerate.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "images"
FLICKR8K = ROOT.parent / "shared" / "data" / "flickr8k" / "images"
# In-domain photos from the Flickr8k test split (never trained on), and the shipped examples.
PHOTOS = {
    "flickr8k/106490881_5a2dd9b7bd.jpg": FLICKR8K / "106490881_5a2dd9b7bd.jpg",
    "flickr8k/1131800850_89c7ffd477.jpg": FLICKR8K / "1131800850_89c7ffd477.jpg",
    "flickr8k/1131932671_c8d17751b3.jpg": FLICKR8K / "1131932671_c8d17751b3.jpg",
    "flickr8k/1119015538_e8e796281e.jpg": FLICKR8K / "1119015538_e8e796281e.jpg",
    "examples/grace_hopper.jpg": EXAMPLES / "grace_hopper.jpg",
    "examples/cat.jpg": EXAMPLES / "cat.jpg",
}
BEAMS = (1, 3)
GOLDEN = Path(__file__).with_name("captions.json")


def captions() -> dict:
    from gamelab_caption import Captioner, bundled_models

    found = {}
    for name in bundled_models():
        captioner = Captioner(name)
        found[name] = {
            photo: {f"beam{beam}": captioner.caption(path, beam_size=beam).text for beam in BEAMS}
            for photo, path in PHOTOS.items()
        }
    return found


if __name__ == "__main__":
    missing = [str(path) for path in PHOTOS.values() if not path.is_file()]
    if missing:
        sys.exit(f"golden photos not found (../shared/data is needed): {', '.join(missing)}")
    GOLDEN.write_text(json.dumps(captions(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
