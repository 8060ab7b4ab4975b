"""Bring a quantised bundle written by an earlier toolchain up to what this one writes, where
that needs neither retraining nor the float weights: the same model, computed faster.

- the encoder takes uint8 pixels (``raw_pixels``; outputs bit-identical);
- the decoder graphs lose tf2onnx's bookkeeping and get fewer, larger kernels
  (``graph_cleanup.simplify``, checked on random inputs);
- 4-bit MatMul weights narrower than ``NBITS_MIN_COLUMNS`` (the attention score, 512 -> 1)
  become float again, as ``quantize_decoder`` now keeps them: the 4-bit values themselves,
  dequantised, so only the kernel's on-the-fly INT8 activations go;
- an EfficientNet-Lite encoder gets its ImageNet head (``class_head``; the other outputs
  bit-identical) and the manifest the config's ``animal_threshold``: the SDK names the
  animal the head sees (``gamelab_caption.animals``).

With ``--tune-repeat-penalty`` (the dev split its config names, once): the beam search's repeat
penalty, chosen on dev as ``tune`` chooses it, at the bundle's length penalty.

The manifest keeps the replaced encoder's sha256 (``encoder.same_outputs_as``) and lists the
changes under ``provenance.upgrades``. Usage: ``python -m gamelab_export.upgrade BUNDLE...``.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from gamelab_caption.bundle import DECODER_INIT, DECODER_STEP, ENCODER, load_bundle, write_manifest
from gamelab_caption.version import __version__

from .class_head import give_class_head, has_class_head
from .config import TrainConfig
from .graph_cleanup import simplify
from .onnx_graph import node_attributes
from .quantize import NBITS_MIN_COLUMNS, QUANTIZATION
from .raw_pixels import take_raw_pixels

logger = logging.getLogger(__name__)


def upgrade_bundle(folder: str | Path) -> list[str]:
    """Upgrade the bundle in ``folder`` in place.

    Returns:
        What changed, one line each; empty when the bundle was already up to date.

    Raises:
        BundleError: ``folder`` is not a valid bundle.
        ValueError: the bundle is not quantised (an FP32 bundle is re-exported instead).
    """
    import onnx

    bundle = load_bundle(folder)
    if bundle.manifest.get("precision") != "int8":
        raise ValueError(f"{folder} is not a quantised bundle: re-export it instead")
    changes, manifest = [], _editable(bundle.manifest)
    if bundle.image_spec.dtype == "float32" and take_raw_pixels(
        bundle.graph_path(ENCODER), bundle.image_spec
    ):
        manifest["encoder"]["image"]["dtype"] = "uint8"
        manifest["encoder"]["same_outputs_as"] = bundle.encoder_id
        changes.append("encoder takes uint8 pixels (raw_pixels, outputs bit-identical)")
    changes += _add_class_head(bundle, manifest)
    for graph in (DECODER_INIT, DECODER_STEP):
        path = bundle.graph_path(graph)
        model = onnx.load(str(path))
        upgraded = simplify(_narrow_nbits_as_float(model))
        if upgraded.SerializeToString() != model.SerializeToString():
            onnx.save(upgraded, str(path))
            before, after = len(model.graph.node), len(upgraded.graph.node)
            changes.append(
                f"{graph}: {before} -> {after} nodes (graph_cleanup, float narrow weights)"
            )
    if changes:
        manifest["quantization"] = QUANTIZATION["int4"]
        _record(manifest, changes)
        write_manifest(bundle.path, manifest)
    return changes


def _add_class_head(bundle, manifest: dict) -> list[str]:
    """Give the encoder its ImageNet head and the manifest an animal threshold (editing
    ``manifest``), where the encoder has such a head and the graph lacks it."""
    config = TrainConfig.from_saved(bundle.manifest["config"])
    path = bundle.graph_path(ENCODER)
    if has_class_head(path) or not give_class_head(path, manifest, config, bits=4):
        return []
    manifest["encoder"]["same_outputs_as"] = bundle.encoder_id
    return [
        "encoder: ImageNet head added (output 'classes', 4-bit weights; features and "
        f"embedding bit-identical); animals named at probability {config.animal_threshold:g}"
    ]


def tune_repeat_penalty(folder: str | Path) -> list[str]:
    """Give a bundle made before the repeat penalty one, chosen on the dev split its config
    names (``tune``'s values and rule, at the bundle's own length penalty).

    Returns:
        What changed, one line; empty when the manifest already has a repeat penalty.
    """
    from .evaluate import tune_decoding
    from .pipeline import load_split

    bundle = load_bundle(folder)
    if "repeat_penalty" in bundle.manifest["decoding"]:
        return []
    config = TrainConfig.from_saved(bundle.manifest["config"])
    manifest = _editable(bundle.manifest)
    decoding = manifest["decoding"]
    # tuned sparing the SDK's REPEATABLE_WORDS (what a manifest without a list gets), which
    # are also the config's default: the list written below
    result = tune_decoding(
        bundle.path,
        load_split(config, "dev")[0],
        (bundle.length_penalty,),
        config.repeat_penalties_to_try,
        int(decoding.get("beam_size", config.beam_size)),
    )
    decoding["repeat_penalty"] = result["repeat_penalty"]
    decoding["repeatable_words"] = config.repeatable_word_list
    scores = ", ".join(f"{k:g}: {v:.2f}" for k, v in result["dev_bleu4_repeat"].items())
    changes = [f"decoding: repeat penalty {result['repeat_penalty']:g} (dev BLEU-4 {scores})"]
    _record(manifest, changes)
    write_manifest(bundle.path, manifest)
    return changes


def _record(manifest: dict, changes: list[str]) -> None:
    """List ``changes`` under the manifest's ``provenance.upgrades``."""
    manifest["provenance"].setdefault("upgrades", []).append(
        {
            "toolchain": f"gamelab-caption-sdk {__version__}",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "changes": changes,
        }
    )


def rescore(folder: str | Path) -> list[dict]:
    """Score the bundle's "ONNX INT8" rows again (same data, same decodings) with the data its
    manifest's config names, and write them into the manifest in their place.

    An upgrade computes the same model with other kernels, so a few captions can change:
    the rows must describe the bundle as it now is.
    """
    from .data import load_dataset
    from .evaluate import evaluate_bundle, ood_name
    from .pipeline import load_split

    bundle = load_bundle(folder)
    config = TrainConfig.from_saved(bundle.manifest["config"])
    examples = {"test": lambda: load_split(config, "test")[0]}
    if config.ood_data:
        examples[ood_name(config.ood_data)] = lambda: load_dataset(config.ood_data)[0]
    rows = []
    for row in bundle.manifest["metrics"]:
        if row["model"] != "ONNX INT8" or row["data"] not in examples:
            rows.append(row)
            continue
        beam = 1 if row["decoding"] == "greedy" else int(row["decoding"].split()[-1])
        data = row["data"]
        rows += evaluate_bundle(bundle.path, "ONNX INT8", examples[data](), (beam,), data)
    manifest = _editable(bundle.manifest)
    manifest["metrics"] = rows
    upgrades = manifest["provenance"].get("upgrades")
    if upgrades:
        upgrades[-1]["rescored"] = "the ONNX INT8 rows of metrics, after these changes"
    write_manifest(bundle.path, manifest)
    return rows


def _editable(manifest: dict) -> dict:
    """The manifest without what ``write_manifest`` adds, nested dicts copied."""
    import copy

    return {
        k: copy.deepcopy(v) for k, v in manifest.items() if k not in ("format_version", "files")
    }


def _narrow_nbits_as_float(model):
    """MatMulNBits of fewer than NBITS_MIN_COLUMNS outputs -> MatMul with the dequantised weights.

    MatMulNBits (symmetric, no zero points: 8) packs each output column's K weights in blocks
    of ``block_size``, two per byte, low nibble first, one scale per column and block.
    """
    import onnx
    from onnx import helper, numpy_helper

    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    for index, node in enumerate(list(graph.node)):
        attributes = node_attributes(node)
        if node.op_type != "MatMulNBits" or len(node.input) != 3 or attributes["bits"] != 4:
            continue
        columns, depth, block = attributes["N"], attributes["K"], attributes["block_size"]
        if columns >= NBITS_MIN_COLUMNS:
            continue
        packed = numpy_helper.to_array(weights[node.input[1]])  # (N, blocks, block / 2)
        scales = numpy_helper.to_array(weights[node.input[2]]).reshape(columns, -1, 1)
        nibbles = np.stack([packed & 15, packed >> 4], axis=-1).reshape(columns, -1, block)
        values = (nibbles.astype(np.float32) - 8) * scales  # (N, blocks, block)
        matrix = values.reshape(columns, -1)[:, :depth].T.copy()  # (K, N)
        name = f"{node.name}/float_weights"
        graph.initializer.append(numpy_helper.from_array(matrix, name))
        matmul = helper.make_node("MatMul", [node.input[0], name], node.output, name=node.name)
        packed_inputs = set(node.input[1:])  # read by this node alone: written by the quantiser
        graph.node.remove(node)
        graph.node.insert(index, matmul)
        kept = [tensor for tensor in graph.initializer if tensor.name not in packed_inputs]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return rewritten


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m gamelab_export.upgrade", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("bundles", nargs="+", help="quantised bundle folders, upgraded in place")
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="score the quantised rows of the manifest again on the data its config names",
    )
    parser.add_argument(
        "--tune-repeat-penalty",
        action="store_true",
        help="choose a repeat penalty on the dev split its config names, if it has none",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    for folder in args.bundles:
        done = upgrade_bundle(folder)
        if args.tune_repeat_penalty:
            done += tune_repeat_penalty(folder)
        print(folder, *(done or ["already up to date"]), sep="\n  ")
        if done and args.rescore:
            for row in rescore(folder):
                if row["model"] == "ONNX INT8":
                    scores = f"BLEU-4 {row['BLEU-4']:.2f}, CIDEr {row['CIDEr']:.1f}"
                    print(f"  {row['data']} {row['decoding']}: {scores}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
