"""Shared by the toolchain tests: captioned photos written as a COCO captions file."""

import json

import pytest


def _write_coco(path, captions: dict[str, list[str]]):
    """Write ``{file_name: [caption, ...]}`` as a COCO captions JSON at ``path``; returns it."""
    images, annotations = [], []
    for image_id, (name, texts) in enumerate(sorted(captions.items()), start=1):
        images.append({"id": image_id, "file_name": name})
        for text in texts:
            annotations.append({"id": len(annotations), "image_id": image_id, "caption": text})
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


@pytest.fixture(scope="session")
def write_coco():
    """The function ``(path, {file_name: [caption, ...]}) -> path``."""
    return _write_coco
