"""Write tests/golden/captions.json: each shipped bundle's exact captions of the golden photos.

Run it when a bundle or the decoding changes, read the diff, and commit it with the change:

    python tests/golden/regenerate.py            # adds or replaces this CPU class's captions
    python tests/golden/regenerate.py --fresh    # a bundle changed: the other class is stale

Captions are recorded per CPU class: ONNX Runtime runs its INT8 kernels with other
instructions where the CPU has VNNI (AVX512-VNNI, AVX-VNNI, AMX) than where it has not, so
captions may differ between the two. (They did, widely, while the encoder had 8-bit weights,
which overflow the non-VNNI kernels; with 7-bit weights they should not, but only the
classes recorded here are checked.) Running this on a machine of the other class adds its
captions beside the recorded ones.
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
    "examples/camera.jpg": EXAMPLES / "camera.jpg",
    "examples/swimming.jpg": EXAMPLES / "swimming.jpg",
}
BEAMS = (1, 3)
GOLDEN = Path(__file__).with_name("captions.json")
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_class() -> str:
    """ "vnni" or "no-vnni" (Linux /proc/cpuinfo; "unknown" elsewhere)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return "unknown"
    return "vnni" if any(flag in flags for flag in _VNNI_FLAGS) else "no-vnni"


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
    fresh = "--fresh" in sys.argv[1:]
    recorded = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() and not fresh else {}
    recorded[cpu_class()] = captions()
    GOLDEN.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    print(f"wrote the {cpu_class()} captions of {GOLDEN}")
