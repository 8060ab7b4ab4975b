"""Each shipped bundle's exact captions of a few photos at beam 1 and 3: any change to a
bundle, the preprocessing or the decoding shows here. After an intended change, regenerate
with ``python tests/golden/regenerate.py`` and commit the reviewed diff."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from gamelab_caption import Captioner, bundled_models

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"
_spec = importlib.util.spec_from_file_location("regenerate", GOLDEN_DIR / "regenerate.py")
regenerate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regenerate)
RECORDED = json.loads(regenerate.GOLDEN.read_text())
CPU = regenerate.cpu_class()
GOLDEN = RECORDED.get(CPU, {})

CASES = [
    (name, photo, beam)
    for name in sorted(GOLDEN)
    for photo in sorted(GOLDEN[name])
    for beam in regenerate.BEAMS
]


def test_every_shipped_bundle_has_golden_captions():
    for captions in RECORDED.values():
        assert sorted(captions) == sorted(bundled_models())
        assert all(set(captions[name]) == set(regenerate.PHOTOS) for name in captions)
    if CPU not in RECORDED:
        pytest.skip(f"golden captions not recorded for this CPU class ({CPU}): {sorted(RECORDED)}")


@pytest.fixture(scope="module")
def captioners() -> dict[str, Captioner]:
    return {}


@pytest.mark.parametrize(("name", "photo", "beam"), CASES)
def test_caption_is_exactly_the_golden_one(captioners, name, photo, beam):
    path = regenerate.PHOTOS[photo]
    if not path.is_file():
        pytest.skip(f"{path} not found: the Flickr8k photos are in ../shared/data")
    captioner = captioners.setdefault(name, Captioner(name))
    assert captioner.caption(path, beam_size=beam).text == GOLDEN[name][photo][f"beam{beam}"]
