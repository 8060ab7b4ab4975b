"""Game search: find the game from a phone photo of its box, against a perceptual hash.

The index holds every cover of ../shared/data/games (5,735 entries, 3,105 game ids). A
query is a cover "photographed": warped in perspective onto a background (a plain or
striped table, or another box out of focus), rotated, cut off at one side, relit
(brightness, contrast, white balance), with glare, blur, sensor noise and JPEG compression,
at three graded strengths. Everything is drawn from one seed: two runs make the same queries.

Reported per level: Recall@1, Recall@5 and MRR@10 (game ids; regional releases are one game)
of the SDK (multi-crop query, and whole image only), of the faiss HNSW backend with its
top-10 overlap with exact search, and of a 64-bit pHash (imagehash) baseline; query latency
p50 including decoding and encoding. Written to search.json and search.md in the output folder.

    pytest benchmarks/test_search_benchmark.py --benchmark-only

Environment (besides the suite's, see conftest.py: GAMELAB_BENCH_THREADS, GAMELAB_BENCH_OUTPUT):
    GAMELAB_BENCH_MODEL: bundle name or folder for the encoder (default: the bundled model).
    GAMELAB_BENCH_GAMES: index only this many game ids, drawn at random (quick runs).
    GAMELAB_BENCH_QUERIES: queries per level, one per game drawn at random (default 1000).
    GAMELAB_BENCH_ABLATION=1: also build an index without the learned whitening.
    GAMELAB_BENCH_LATENCY_ROUNDS: timed queries per backend (default 100).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pytest
from bench_photos import LEVELS, photograph
from PIL import Image

from gamelab_caption import Captioner, GameIndex
from gamelab_caption.bundle import DEFAULT_MODEL
from gamelab_caption.catalog import read_catalog
from gamelab_caption.errors import ImageError
from gamelab_caption.preprocessing import load_image

imagehash = pytest.importorskip("imagehash", reason="the baseline needs imagehash")

SEED = 1234
GAMES_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "games"
DEFAULT_QUERIES = 1000
TOP = 10  # hits fetched per query: MRR@10, and the top-10 overlap of HNSW with exact search
LATENCY_ROUNDS = int(os.environ.get("GAMELAB_BENCH_LATENCY_ROUNDS", "100"))


def _metrics(ranks: list[int | None]) -> dict:
    """Recall@1, Recall@5, MRR@10 from 1-based ranks (None: not in the top 10)."""
    found = np.array([r if r is not None else np.inf for r in ranks], dtype=np.float64)
    return {
        "recall@1": round(float(np.mean(found <= 1)), 4),
        "recall@5": round(float(np.mean(found <= 5)), 4),
        "mrr@10": round(float(np.mean(np.where(found <= TOP, 1 / found, 0.0))), 4),
        "queries": len(ranks),
    }


def _rank(hits, game_id: str) -> int | None:
    ids = [hit.game_id for hit in hits]
    return ids.index(game_id) + 1 if game_id in ids else None


def _phash(image: Image.Image) -> np.ndarray:
    return imagehash.phash(image).hash.ravel()  # (64,) bool


class PerceptualHash:
    """The baseline: 64-bit pHash per cover; a game's distance is its nearest cover's."""

    def __init__(self, covers: list[tuple[str, str, np.ndarray]]):
        self.game_ids = sorted({game_id for game_id, _, _ in covers})
        position = {game_id: i for i, game_id in enumerate(self.game_ids)}
        self.rows = np.array([position[game_id] for game_id, _, _ in covers])  # (M,)
        self.bits = np.stack([bits for _, _, bits in covers])  # (M, 64)

    def rank(self, image: Image.Image, game_id: str, rng: np.random.Generator) -> int | None:
        distances = (self.bits != _phash(image)).sum(axis=1)  # (M,)
        best = np.full(len(self.game_ids), 65)
        np.minimum.at(best, self.rows, distances)  # (games,)
        mine = best[self.game_ids.index(game_id)]
        ties = int((best == mine).sum()) - 1  # 64 bits tie often: break ties at random
        rank = 1 + int((best < mine).sum()) + int(rng.integers(0, ties + 1))
        return rank if rank <= TOP else None


@pytest.fixture(scope="session")
def catalogue() -> dict:
    """Entries, and (game_id, path, pHash) of every decodable cover, of all or
    GAMELAB_BENCH_GAMES games."""
    if not GAMES_DIR.is_dir():
        pytest.skip(f"the game catalogue is not at {GAMES_DIR.resolve()}")
    entries = read_catalog(GAMES_DIR)
    if os.environ.get("GAMELAB_BENCH_GAMES"):
        ids = sorted({entry.game_id for entry in entries})
        count = min(int(os.environ["GAMELAB_BENCH_GAMES"]), len(ids))
        keep = set(np.random.default_rng(SEED).choice(ids, count, replace=False))
        entries = [entry for entry in entries if entry.game_id in keep]
    covers = []
    for entry in entries:
        for path in entry.images:
            try:
                covers.append((entry.game_id, path, _phash(load_image(path))))
            except ImageError:
                pass  # the catalogue's own faults; the index counts them too
    return {"entries": entries, "covers": covers}


@pytest.fixture(scope="session")
def baseline(catalogue) -> PerceptualHash:
    return PerceptualHash(catalogue["covers"])


@pytest.fixture(scope="session")
def search_captioner(settings) -> Captioner:
    return Captioner(os.environ.get("GAMELAB_BENCH_MODEL", DEFAULT_MODEL), threads=settings.threads)


@pytest.fixture(scope="session")
def results(settings, search_captioner, catalogue):
    """Filled by the tests; written as search.json and search.md when the session ends."""
    found = {
        "settings": {
            "model": search_captioner.name,
            "bundle": str(search_captioner.bundle.path),
            "threads": settings.threads,
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
            "machine": platform.processor() or platform.machine(),
            "seed": SEED,
            "entries": len(catalogue["entries"]),
            "games": len({entry.game_id for entry in catalogue["entries"]}),
            "levels": LEVELS,
        },
        "levels": {},
    }
    yield found
    settings.output.mkdir(parents=True, exist_ok=True)
    (settings.output / "search.json").write_text(json.dumps(found, indent=2) + "\n")
    (settings.output / "search.md").write_text(_markdown(found))


@pytest.fixture(scope="session")
def game_index(catalogue, search_captioner, results) -> GameIndex:
    start = time.perf_counter()
    index = GameIndex.build(catalogue["entries"], captioner=search_captioner, progress=False)
    report = index.report
    results["index"] = {
        "build_s": round(time.perf_counter() - start, 1),
        "games": len(index),
        "entries": report.entries,
        "built": report.built,
        "images": report.images,
        "skipped": report.skipped,
        "whitened": index.whitened,
    }
    return index


@pytest.fixture(scope="session")
def hnsw_index(game_index, search_captioner, tmp_path_factory, results) -> GameIndex | None:
    """The same index on the approximate backend; None without faiss-cpu."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return None
    path = game_index.save(tmp_path_factory.mktemp("search") / "games.idx")
    start = time.perf_counter()
    index = GameIndex.load(path, captioner=search_captioner, backend="hnsw")
    results["index"]["hnsw_load_s"] = round(time.perf_counter() - start, 2)
    results["index"]["file_mb"] = round(path.stat().st_size / 2**20, 1)
    return index


@pytest.fixture(scope="session")
def plain_index(catalogue, search_captioner) -> GameIndex | None:
    if os.environ.get("GAMELAB_BENCH_ABLATION") != "1":
        return None
    return GameIndex.build(
        catalogue["entries"], captioner=search_captioner, progress=False, whiten=False
    )


@pytest.fixture(scope="session")
def queries(catalogue) -> dict[str, list[tuple[str, bytes]]]:
    """(game_id, JPEG bytes) per level: one cover of each of the query games, photographed."""
    rng = np.random.default_rng(SEED)
    covers = catalogue["covers"]
    by_game: dict[str, list[int]] = {}
    for i, (game_id, _, _) in enumerate(covers):
        by_game.setdefault(game_id, []).append(i)
    games = sorted(by_game)
    count = os.environ.get("GAMELAB_BENCH_QUERIES", str(DEFAULT_QUERIES))
    count = len(games) if count == "all" else min(int(count), len(games))
    chosen = rng.choice(games, count, replace=False)
    return {
        level: [
            (
                game_id,
                photograph(
                    load_image(covers[rng.choice(by_game[game_id])][1]),
                    level,
                    rng,
                    clutter=load_image(covers[rng.integers(len(covers))][1]),
                ),
            )
            for game_id in chosen
        ]
        for level in LEVELS
    }


@pytest.mark.parametrize("level", list(LEVELS))
def test_recall_by_distortion_level(
    benchmark, level, queries, baseline, game_index, hnsw_index, plain_index, results
):
    """All methods on the same queries; the timed round is the whole level."""
    tie_break = np.random.default_rng(SEED)

    def evaluate() -> dict:
        ranks = {"sdk": [], "sdk whole image": [], "phash": []}
        if hnsw_index is not None:
            ranks["sdk hnsw"] = []
        if plain_index is not None:
            ranks["sdk no whitening"] = []
        overlap, seconds = [], []
        for game_id, photo in queries[level]:
            start = time.perf_counter()
            views = game_index.embed(photo)  # (V, D): the path index.search takes
            exact = game_index.search_embedding(views, TOP)
            seconds.append(time.perf_counter() - start)
            ranks["sdk"].append(_rank(exact, game_id))
            ranks["sdk whole image"].append(
                _rank(game_index.search_embedding(views[:1], TOP), game_id)
            )
            if hnsw_index is not None:
                approximate = hnsw_index.search_embedding(views, TOP)
                ranks["sdk hnsw"].append(_rank(approximate, game_id))
                shared = {h.game_id for h in exact} & {h.game_id for h in approximate}
                overlap.append(len(shared) / TOP)
            if plain_index is not None:
                hits = plain_index.search(photo, TOP)  # its own space: embed again
                ranks["sdk no whitening"].append(_rank(hits, game_id))
            image = load_image(photo)
            ranks["phash"].append(baseline.rank(image, game_id, tie_break))
        return {
            "methods": {name: _metrics(found) for name, found in ranks.items()},
            "hnsw_top10_overlap_with_exact": round(float(np.mean(overlap)), 4) if overlap else None,
            "sdk_query_p50_ms": round(1e3 * float(np.median(seconds)), 1),
        }

    benchmark.group = "search recall"
    outcome = benchmark.pedantic(evaluate, rounds=1, iterations=1)
    results["levels"][level] = outcome
    benchmark.extra_info.update(level=level, **outcome["methods"]["sdk"])


@pytest.mark.parametrize("backend", ["exact", "hnsw"])
def test_query_latency(benchmark, backend, request, queries, results):
    """One query end to end: JPEG bytes -> decode, two crops, encoder, search."""
    index = request.getfixturevalue("game_index" if backend == "exact" else "hnsw_index")
    if index is None:
        pytest.skip("the hnsw backend needs faiss-cpu: pip install 'gamelab-caption-sdk[ann]'")
    photos = [photo for _, photo in queries["strong"]]
    for photo in photos[:3]:  # warm the session
        index.search(photo)
    turn = iter(range(10**9))

    def next_photo():
        return (photos[next(turn) % len(photos)],), {"k": 5}

    benchmark.group = "search latency"
    benchmark.pedantic(index.search, setup=next_photo, rounds=LATENCY_ROUNDS)
    results.setdefault("latency_ms", {})[backend] = {
        "p50": round(1e3 * benchmark.stats.stats.median, 1),
        "mean": round(1e3 * benchmark.stats.stats.mean, 1),
        "rounds": LATENCY_ROUNDS,
    }


def _markdown(found: dict) -> str:
    settings = found["settings"]
    lines = [
        "# Game search benchmark",
        "",
        f"Model `{settings['model']}` ({settings['bundle']}), {settings['threads']} threads, "
        f"{settings['entries']} entries / {settings['games']} games, seed {settings['seed']}.",
        "",
        "| level | method | Recall@1 | Recall@5 | MRR@10 | queries |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for level, outcome in found["levels"].items():
        for method, m in outcome["methods"].items():
            lines.append(
                f"| {level} | {method} | {m['recall@1']:.3f} | {m['recall@5']:.3f} "
                f"| {m['mrr@10']:.3f} | {m['queries']} |"
            )
    lines.append("")
    for level, outcome in found["levels"].items():
        overlap = outcome["hnsw_top10_overlap_with_exact"]
        lines.append(
            f"- {level}: HNSW top-10 overlap with exact search "
            f"{'n/a' if overlap is None else f'{overlap:.3f}'}; "
            f"SDK query p50 {outcome['sdk_query_p50_ms']} ms (embed + search)"
        )
    for backend, latency in found.get("latency_ms", {}).items():
        lines.append(
            f"- `index.search(jpeg_bytes)`, {backend}: p50 {latency['p50']} ms, "
            f"mean {latency['mean']} ms over {latency['rounds']} strong-level queries"
        )
    if "index" in found:
        lines.append(f"- index: {json.dumps(found['index'])}")
    return "\n".join(lines) + "\n"
