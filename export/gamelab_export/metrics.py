"""Caption metrics as papers report them: BLEU-1..4, METEOR, ROUGE-L and CIDEr, x100.

Scores come from pycocoevalcap, the COCO caption evaluation code behind published numbers,
so ours compare with theirs; it is not re-implemented here. Its PTB tokenizer and METEOR run
on Java, started as subprocesses.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Mapping, Sequence

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
JAVA_INSTALL = "apt-get install default-jre-headless"
EXPORT_INSTALL = "pip install 'gamelab-caption-sdk[export]'"
_METEOR_ISSUE = "https://github.com/salaniz/pycocoevalcap/issues/15"


def score_captions(
    references: dict[str, list[str]], candidates: dict[str, str]
) -> dict[str, float]:
    """Score one candidate caption per image against that image's reference captions.

    Args:
        references: image id -> its human captions (at least one each).
        candidates: image id -> the generated caption; same ids as ``references``.

    Returns:
        ``{"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}`` -> score in
        percent (x100, as papers report them). Corpus-level scores, as in COCO evaluation.

    Raises:
        ValueError: the ids differ, nothing to score, or an image has no references.
        RuntimeError: Java is not installed, or METEOR's Java process failed.
        ImportError: pycocoevalcap is not installed.
    """
    _check_inputs(references, candidates)
    if shutil.which("java") is None:
        raise RuntimeError(
            f"Caption metrics need Java (PTB tokenizer, METEOR); install it: {JAVA_INSTALL}"
        )
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError as e:
        raise ImportError(f"Caption metrics need pycocoevalcap: {EXPORT_INSTALL}") from e

    # The tokenizer runs Java on one caption a line and maps output lines back by position, so
    # a caption holding a line break (\r, \u2028, ...) shifts every later caption onto the wrong
    # image; METEOR's stdin protocol breaks the same way (Maluuba/nlg-eval#91,
    # Labbeti/aac-metrics#6). Collapse all whitespace first.
    ids = sorted(references)
    gts = {i: [{"caption": _one_line(text)} for text in references[i]] for i in ids}
    res = {i: [{"caption": _one_line(candidates[i])}] for i in ids}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its counts
        gts, res = _tokenize(PTBTokenizer(), gts), _tokenize(PTBTokenizer(), res)
        bleu, _ = Bleu(4).compute_score(gts, res)
        meteor = _meteor(gts, res)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
    scores = [*bleu, meteor, rouge, cider]
    return {name: 100.0 * float(score) for name, score in zip(METRICS, scores, strict=True)}


def markdown_table(
    rows: Sequence[Mapping[str, object]], columns: Sequence[str], *, float_format: str = ".1f"
) -> str:
    """Render ``rows`` as a GitHub Markdown table with ``columns`` in that order.

    Floats use ``float_format``; numeric columns are right-aligned; a missing key is left blank.

    Args:
        rows: one mapping per table row, e.g. ``{"model": "int8", **score_captions(...)}``.
        columns: the keys to show, in order; also the header.
        float_format: format spec for floats (default one decimal, as papers print scores).

    Returns:
        The table: header, alignment line and one line per row, without a final newline.

    Raises:
        ValueError: ``columns`` is empty.
    """
    if not columns:
        raise ValueError("markdown_table needs at least one column")

    def cell(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return format(value, float_format)
        return str(value).replace("|", "\\|").replace("\n", " ")

    def is_number(value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    numeric = [
        any(row.get(column) is not None for row in rows)
        and all(is_number(row[column]) for row in rows if row.get(column) is not None)
        for column in columns
    ]
    lines = [
        "| " + " | ".join(cell(column) for column in columns) + " |",
        "|" + "|".join("---:" if right else "---" for right in numeric) + "|",
    ]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _check_inputs(references: dict[str, list[str]], candidates: dict[str, str]) -> None:
    missing = sorted(set(references) - set(candidates))
    if missing:
        raise ValueError(f"{len(missing)} images have references but no candidate: {missing}")
    extra = sorted(set(candidates) - set(references))
    if extra:
        raise ValueError(f"{len(extra)} images have a candidate but no references: {extra}")
    if not references:
        raise ValueError("Nothing to score: references and candidates are empty")
    without = sorted(i for i, texts in references.items() if not texts)
    if without:
        raise ValueError(f"{len(without)} images have an empty reference list: {without}")
    not_text = sorted(i for i, text in candidates.items() if not isinstance(text, str))
    if not_text:
        raise ValueError(f"Candidates must be one string per image; not a string: {not_text}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _tokenize(tokenizer: object, captions: dict[str, list[dict[str, str]]]) -> dict[str, list[str]]:
    """PTB-tokenize, checking every caption came back: a failed JVM only shortens the output."""
    tokenized = tokenizer.tokenize(captions)
    if {i: len(v) for i, v in tokenized.items()} != {i: len(v) for i, v in captions.items()}:
        raise RuntimeError("pycocoevalcap's PTBTokenizer (Java) returned fewer captions than given")
    return tokenized


def _meteor(gts: dict[str, list[str]], res: dict[str, list[str]]) -> float:
    """METEOR via pycocoevalcap, turning a dead Java process into a clear error.

    When the JVM dies (e.g. it cannot reserve -Xmx2G), ``compute_score`` fails on an empty line
    with "could not convert string to float: ''" (salaniz/pycocoevalcap#15) and leaves its lock
    held, so the scorer's ``__del__`` would then block forever; kill it and free the lock.
    """
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor()
    try:
        score, _ = meteor.compute_score(gts, res)
    except (ValueError, OSError) as e:
        process = meteor.meteor_p
        process.kill()
        stderr = process.stderr.read().decode(errors="replace").strip()
        if meteor.lock.locked():
            meteor.lock.release()
        raise RuntimeError(
            f"METEOR's Java process failed ({stderr or e}); see {_METEOR_ISSUE}"
        ) from e
    return float(score)
