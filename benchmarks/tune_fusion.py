"""Choose search.rank_score's weights and fit search.CALIBRATION, which turns it into a confidence.

Draws queries of every kind with another seed than the recognition benchmark's, builds the
index once (cached in the output folder), reads every query's text once, collects each
query's candidate games with their evidence (image similarity, text similarity, whether
text was read), searches the ranking weights (TEXT_WEIGHT, TEXT_BOOST, SURE_GAP) for the
best worst Recall@1 relative to each kind's goal, then fits a logistic regression of "this
candidate is the answer" on the ranking score, its lead and the read flag (Newton's method, a
little L2), and, on the queries whose top game is wrong, one of "this other game is the
answer" on its score's gap to the top's and whether it is second (RUNNERS_UP, at the
current weights). Prints the constants to paste into search.py, Recall@1 per kind, how often
OCR runs, and how well the shipped confidences of the first and second hits match how
often they are right.

    python benchmarks/tune_fusion.py [--queries 150] [--output benchmarks/results/tune]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recognition_data  # noqa: E402

from gamelab_caption import Captioner, GameIndex  # noqa: E402
from gamelab_caption import search as search_module  # noqa: E402

TUNING_SEED = 7
# every candidate search_embedding considers (its image and text proposals), whatever
# the current weights rank first: otherwise the tuning would see only what they favour
CANDIDATES = search_module.VISUAL_CANDIDATES + search_module.TEXT_CANDIDATES


def _reads(index: GameIndex, queries, cache: Path) -> tuple[np.ndarray, list[list[str]]]:
    """Each query's embedded views (Q, V, D) and the lines read in it, computed once."""
    if cache.with_suffix(".npy").exists():
        return np.load(cache.with_suffix(".npy")), json.loads(cache.read_text())
    views, lines = [], []
    for number, query in enumerate(queries):
        views.append(index.embed(query.image))
        lines.append([line.text for line in index.read(query.image)])
        if number % 50 == 0:
            print(f"  {number}/{len(queries)} queries", flush=True)
    np.save(cache.with_suffix(".npy"), np.stack(views))
    cache.write_text(json.dumps(lines))
    return np.stack(views), lines


def _features(index: GameIndex, queries, views, lines) -> list[dict]:
    """Per query: its kind, answer and candidates [(game_id, visual, text, read)]."""
    rows = []
    for query, query_views, query_lines in zip(queries, views, lines, strict=True):
        hits = index.search_embedding(query_views, CANDIDATES, text=query_lines)
        read = any(e.source == "text" for hit in hits for e in hit.evidence) or bool(
            index._titles().clean(query_lines)
        )
        candidates = [
            (
                hit.game_id,
                hit.evidence[0].score,
                next((e.score for e in hit.evidence if e.source == "text"), 0.0),
                read,
            )
            for hit in hits
        ]
        rows.append({"kind": query.kind, "answer": query.game_id, "candidates": candidates})
    return rows


GOALS = {"box_scan": 0.97, "box_photo": 0.95, "title_screen": 0.85, "screenshot": 0.70}


def _ranked(rows: list[dict], weights) -> list[list[tuple[float, str, bool]]]:
    """Per query: (rank score, game id, read) of its candidates, best first, as
    ``GameIndex.search`` ranks them (no text when the image gap is clear: no OCR)."""
    ranked = []
    for q in rows:
        images = sorted((v for _, v, _, _ in q["candidates"]), reverse=True) + [-1.0, -1.0]
        gap = images[0] - images[1]
        read = gap < weights[2]  # search() runs no OCR below SURE_GAP
        scored = [
            (search_module.rank_score(v, t if read else 0.0, gap, weights), g, read and r)
            for g, v, t, r in q["candidates"]
        ]
        ranked.append(sorted(scored, key=lambda item: -item[0]))
    return ranked


def _recall(rows: list[dict], weights) -> dict[str, float]:
    by_kind: dict[str, list[bool]] = {}
    for q, scored in zip(rows, _ranked(rows, weights), strict=True):
        by_kind.setdefault(q["kind"], []).append(bool(scored) and scored[0][1] == q["answer"])
    return {kind: round(float(np.mean(hits)), 3) for kind, hits in by_kind.items()}


def _worst_ratio(recall: dict[str, float]) -> float:
    return min(recall[kind] / goal for kind, goal in GOALS.items())


def _calibrate(rows: list[dict], weights, l2: float = 1e-3) -> np.ndarray:
    """Logistic regression of "is the answer" on (rank score, lead over the best other, read)."""
    x, y = [], []
    for q, ranked in zip(rows, _ranked(rows, weights), strict=True):
        for place, (score, game, read) in enumerate(ranked):
            other = ranked[1][0] if place == 0 and len(ranked) > 1 else ranked[0][0]
            lead = score - other if len(ranked) > 1 else 1.0
            x.append([score, lead, read, 1.0])
            y.append(game == q["answer"])
    return _newton_logistic(np.array(x, np.float64), np.array(y, np.float64), l2)


def _fit_runners_up(rows: list[dict], weights, l2: float = 1e-2) -> np.ndarray:
    """Logistic regression of "is the answer" for the games after the top one, on the queries
    whose top game is wrong: (rank score minus the top's, second place, bias), as
    search.confidences uses it (RUNNERS_UP)."""
    x, y = [], []
    for q, ranked in zip(rows, _ranked(rows, weights), strict=True):
        if not ranked or ranked[0][1] == q["answer"]:
            continue
        for place, (score, game, _) in enumerate(ranked[1:], start=2):
            x.append([score - ranked[0][0], float(place == 2), 1.0])
            y.append(game == q["answer"])
    return _newton_logistic(np.array(x, np.float64), np.array(y, np.float64), l2)


def _newton_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    w = np.zeros(x.shape[1])
    for _ in range(50):  # Newton's method on the L2-regularised log-likelihood
        p = 1 / (1 + np.exp(-x @ w))
        gradient = x.T @ (p - y) + l2 * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(len(w))
        w -= np.linalg.solve(hessian, gradient)
    return w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=150, help="per kind")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/tune"))
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    drawn = recognition_data.draw(TUNING_SEED, args.queries)
    captioner = Captioner()
    saved = args.output / "full.idx"
    if saved.exists():
        index = GameIndex.load(saved, captioner=captioner, read_text=True)
    else:
        index = GameIndex.build(drawn.full, captioner=captioner, read_text=True)
        index.save(saved)
    queries = [
        q for kind, qs in drawn.queries.items() if kind != "screenshot_covers_only" for q in qs
    ]
    views, lines = _reads(index, queries, args.output / f"reads-{args.queries}.json")
    rows = _features(index, queries, views, lines)
    current = (search_module.TEXT_WEIGHT, search_module.TEXT_BOOST, search_module.SURE_GAP)
    grid = [
        (text_weight, boost, sure_gap)
        for text_weight in (0.0, 0.1, 0.2, 0.3, 0.5)
        for boost in (2.0, 5.0, 10.0, 20.0)
        for sure_gap in (0.05, 0.1, 0.15, 0.2)
    ]

    def goodness(weights) -> tuple[float, float]:  # the worst kind against its goal, then mean
        recall = _recall(rows, weights)
        return _worst_ratio(recall), float(np.mean(list(recall.values())))

    best = max(grid, key=goodness)
    print("Recall@1 current", current, _recall(rows, current))
    print("Recall@1 best   ", best, _recall(rows, best))
    reads = sum(scored[0][2] or not scored for scored in _ranked(rows, best))
    print(f"OCR runs for {reads}/{len(rows)} queries (the rest: a clear image gap)")
    calibration = _calibrate(rows, best)
    runners_up = _fit_runners_up(rows, current)  # the ranking search.py has
    print("TEXT_WEIGHT, TEXT_BOOST, SURE_GAP = {}, {}, {}".format(*best))
    print("CALIBRATION = ({:.2f}, {:.2f}, {:.2f}, {:.2f})".format(*calibration))
    print("RUNNERS_UP = ({:.2f}, {:.2f}, {:.2f})".format(*runners_up))
    # calibration check of what search.py has (its weights and CALIBRATION) with these
    # RUNNERS_UP: mean confidence against accuracy of the first and second hits, in bins
    hits = {"top": [], "second": []}
    for q, ranked in zip(rows, _ranked(rows, current), strict=True):
        if ranked:
            scores = [score for score, _, _ in ranked]
            chances = search_module.confidences(scores, ranked[0][2], runners_up=runners_up)
            for place, name in enumerate(hits):
                if place < len(ranked):
                    hits[name].append((chances[place], ranked[place][1] == q["answer"]))
    for name, chances in hits.items():
        for low, high in ((0, 0.05), (0.05, 0.5), (0.5, 0.8), (0.8, 0.95), (0.95, 1.01)):
            inside = [right for chance, right in chances if low <= chance < high]
            if inside:
                print(
                    f"{name} hits with confidence {low}-{high}: {len(inside)}, "
                    f"right {np.mean(inside):.2f}"
                )


if __name__ == "__main__":
    main()
