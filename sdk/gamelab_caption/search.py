"""Find the game in a photo: nearest catalogue covers by the bundle encoder's embedding.

GameLab users upload a photo of a box, a cartridge or a screen; the answer is a game from
a catalogue (catalog.py). Covers and photos are embedded by the encoder the captioner uses
(its pooled output), so one model serves both jobs.

A pooled ImageNet feature of a photo moves most with what surrounds the box, less with
blur, noise, glare or colour (benchmarks/test_search_benchmark.py). The measures, each with
its Recall@1 at the benchmark's strongest level (full catalogue, 500 tuning queries drawn
with another seed than the benchmark's): embeddings are power-normalised (signed square
root, then L2), and each query is also embedded as its centre crop (``QUERY_CROPS``); a
cover scores its mean similarity to the views (0.49 without whitening). The first fill of
an index renders ``COVER_PHOTOS`` simulated phone photos of every cover (whitening.py) and
learns from the (cover, photo) pairs a whitening that damps the directions framing, light
and the camera move (0.88; learned whitening as in Radenovic et al., "Fine-tuning CNN image
retrieval with no human annotation", TPAMI 2018). Each cover is then stored with the mean
of its photos added, so a photo-like query lands near it (0.97 with three photos, 0.96
with two); clean covers still find themselves (0.997 either way).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .captioner import Captioner
from .catalog import BuildReport, CatalogEntry, CatalogPath, CoverIntake, read_catalog
from .errors import BundleError
from .preprocessing import ImageInput, load_image, to_pixels
from .vectors import Hnsw, exact_top, import_faiss, serial_dot
from .whitening import learn_whitening, simulate_photo

FORMAT_VERSION = 1
QUERY_CROPS = (1.0, 0.7)  # views per query: whole, centre 70% (side); one encoder run each
BUILD_BATCH = 32  # covers loaded and encoded at a time while building
WHITEN_MIN_COVERS = 64  # fewer covers in the first fill: no whitening (too few pairs)
COVER_PHOTOS = 3  # simulated photos of every cover: they teach the whitening, join its vector
PHOTO_WEIGHT = 1.0  # weight of the photos' mean against the cover in the vector searched
PHOTO_SEED = 0  # the simulated photos: same catalogue, same index
BACKENDS = ("exact", "hnsw")

logger = logging.getLogger(__name__)
Progress = bool | Callable[[int, int], None]


@dataclass(frozen=True)
class GameHit:
    """One game found for a query image.

    Attributes:
        game_id: the catalogue id; regional releases sharing it are one game.
        name: the name of the best-matching release.
        score: the mean cosine similarity of the query's views and the cover (whitened).
        platform: the release's system, e.g. "snes"; None if the catalogue has none.
        image: the path of the catalogue image that matched.
        metadata: the release's other catalogue fields (description, genre, ...).
    """

    game_id: str
    name: str
    score: float
    platform: str | None
    image: str
    metadata: dict


def _unit(vectors: np.ndarray) -> np.ndarray:
    """L2 per row: (N, D) -> (N, D) float32."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _normalise(embedding: np.ndarray) -> np.ndarray:
    """Signed square root, then L2 per row: (N, D) -> (N, D) float32."""
    return _unit(np.sign(embedding) * np.sqrt(np.abs(embedding)))


def _crop(image: Image.Image, fraction: float) -> Image.Image:
    if fraction >= 1.0:
        return image
    width, height = image.size
    left, top = width * (1 - fraction) / 2, height * (1 - fraction) / 2
    return image.crop((round(left), round(top), round(width - left), round(height - top)))


def _encoder_identity(captioner: Captioner) -> dict:
    manifest = captioner.bundle.manifest
    encoder = manifest["graphs"]["encoder"]
    return {"name": manifest["name"], "encoder_sha256": manifest["files"][encoder]}


def _progress_callback(progress: Progress, total: int):
    if callable(progress):
        return progress, lambda: None
    if progress:
        try:
            from tqdm.auto import tqdm  # optional: no bar without it
        except ImportError:
            pass
        else:
            bar = tqdm(total=total, unit="cover", desc="Indexing covers")
            return lambda done, _: bar.update(done - bar.n), bar.close
    return lambda done, total: None, lambda: None


class GameIndex:
    """Catalogue covers embedded by a bundle's encoder, searched by image.

    Make one with ``GameIndex.build(catalog)`` or ``GameIndex.load(path)``; extend it with
    ``add``. Searching is thread-safe; ``add`` must not run while another thread searches.

    Args:
        captioner: whose encoder embeds covers and queries; default ``Captioner()``.
        backend: "exact" (numpy, default) or "hnsw" (faiss, approximate, for large catalogues).
        whiten: learn a whitening on the first fill (if it has WHITEN_MIN_COVERS covers or
            more); False keeps plain cosine similarity of the embeddings.

    Raises:
        ValueError: an unknown backend.
        ImportError: the "hnsw" backend without faiss installed.
    """

    def __init__(
        self, captioner: Captioner | None = None, *, backend: str = "exact", whiten: bool = True
    ):
        if backend not in BACKENDS:
            raise ValueError(f"Invalid backend {backend!r}, expected one of: {', '.join(BACKENDS)}")
        if backend == "hnsw":
            import_faiss()  # fail before encoding anything
        self.captioner = captioner if captioner is not None else Captioner()
        self.backend = backend
        self.whiten = whiten
        self.report = BuildReport()
        self._identity = _encoder_identity(self.captioner)
        self._entries: list[CatalogEntry] = []
        self._images: list[tuple[str, int]] = []  # per row: (image path, entry)
        self._game_ids: list[str] = []
        self._game_rows: dict[str, int] = {}
        self._row_games = np.zeros(0, np.int64)  # (M,) game of each row
        self._vectors: np.ndarray | None = None  # (M, D) as searched, set by the first add
        self._whitening: tuple[np.ndarray, np.ndarray] | None = None  # mean (D,), (D, D)
        self._ann: Hnsw | None = None

    @classmethod
    def build(
        cls,
        catalog: CatalogPath | Iterable[CatalogPath | CatalogEntry],
        *,
        captioner: Captioner | None = None,
        progress: Progress = True,
        backend: str = "exact",
        whiten: bool = True,
    ) -> GameIndex:
        """Index a catalogue: gamelist.xml, CSV or JSON Lines files, or CatalogEntry objects.

        Bad entries are skipped with a logged warning and counted in ``index.report``.

        Args:
            catalog: a path, or several paths and/or entries; a folder means its gamelist.xml
                files.
            captioner: whose encoder to use; default ``Captioner()``.
            progress: a bar (tqdm, when installed), False for none, or a callable
                ``(covers_done, covers_total)``.
            backend, whiten: as in the constructor.

        Raises:
            ValueError: a catalogue file is missing, of an unknown format or malformed (the
                message names the file and line).
        """
        index = cls(captioner, backend=backend, whiten=whiten)
        index.add(catalog, progress=progress)
        return index

    def __len__(self) -> int:
        """Number of games (distinct ids)."""
        return len(self._game_ids)

    @property
    def whitened(self) -> bool:
        """Whether the first fill had enough covers (WHITEN_MIN_COVERS) to learn a whitening."""
        return self._whitening is not None

    def add(
        self,
        catalog: CatalogPath | Iterable[CatalogPath | CatalogEntry],
        *,
        progress: Progress = True,
    ) -> BuildReport:
        """Add catalogue entries; returns what this call added (``report`` sums all calls).

        The whitening is learned by the first call only; later ones reuse it.
        Args and Raises: as in ``build``.
        """
        items = [catalog] if isinstance(catalog, (str, os.PathLike)) else list(catalog)
        entries = []
        for item in items:
            entries += [item] if isinstance(item, CatalogEntry) else read_catalog(item)
        indexed = {(self._entries[entry].game_id, path) for path, entry in self._images}
        intake = CoverIntake(entries, indexed)
        learn = self.whiten and self._vectors is None and len(intake.covers) >= WHITEN_MIN_COVERS
        vectors, photos, embedded = self._embed_covers(intake, progress, learn or self.whitened)
        added: dict[int, int] = {}  # entry position in this call -> entry row in the index
        for position, path in embedded:
            if position not in added:
                added[position] = len(self._entries)
                self._entries.append(entries[position])
            self._images.append((path, added[position]))
        if vectors is not None:
            if learn:
                pairs = np.stack([np.repeat(vectors, COVER_PHOTOS, axis=0), photos], axis=1)
                self._whitening = learn_whitening(vectors, pairs)
            rows = self._project(vectors)
            if photos is not None:  # each cover with its photos: photo-like queries land near
                views = self._project(photos).reshape(len(vectors), COVER_PHOTOS, -1)
                rows = _unit(rows + PHOTO_WEIGHT * views.mean(axis=1))
            self._add_rows(rows, [added[position] for position, _ in embedded])
        report = intake.report(built=added.keys(), images=len(embedded))
        self.report = self.report + report
        return report

    def _embed_covers(self, intake: CoverIntake, progress: Progress, with_photos: bool):
        """Encode covers in batches, and ``COVER_PHOTOS`` simulated photos of each if asked.

        Returns:
            covers (N, D) or None, photos (N * COVER_PHOTOS, D) or None (cover-major), and
            [(entry position, path)] of the N covers that could be read.
        """
        spec, total = self.captioner.bundle.image_spec, len(intake.covers)
        rng = np.random.default_rng(PHOTO_SEED)
        update, close = _progress_callback(progress, total)
        covers, photos, embedded = [], [], []
        clutter = None  # the previous cover: a box beside this one in some photos
        try:
            for start in range(0, total, BUILD_BATCH):
                pixels, photo_pixels = [], []
                for number in range(start, min(start + BUILD_BATCH, total)):
                    position, path = intake.covers[number]
                    image = intake.open(position, path, self.captioner.max_pixels)
                    if image is None:
                        continue
                    pixels.append(to_pixels(image, spec))
                    embedded.append((position, path))
                    for _ in range(COVER_PHOTOS if with_photos else 0):
                        photo = simulate_photo(image, rng, clutter)
                        photo_pixels.append(to_pixels(photo, spec))
                    clutter = image
                if pixels:
                    encoded = _normalise(self.captioner.encode(np.stack(pixels + photo_pixels))[1])
                    covers.append(encoded[: len(pixels)])
                    photos.append(encoded[len(pixels) :])
                update(min(start + BUILD_BATCH, total), total)
        finally:
            close()
        if not covers:
            return None, None, embedded
        return np.concatenate(covers), np.concatenate(photos) if with_photos else None, embedded

    def _project(self, vectors: np.ndarray) -> np.ndarray:
        """Normalised embeddings (N, D) -> the space searched (N, D), unit length."""
        if self._whitening is None:
            return vectors
        mean, matrix = self._whitening
        return _unit(serial_dot(vectors - mean, matrix.T))  # (N, D); the matrix is symmetric

    def _add_rows(self, vectors: np.ndarray, entry_rows: list[int]) -> None:
        games = []
        for entry in entry_rows:
            game_id = self._entries[entry].game_id
            if game_id not in self._game_rows:
                self._game_rows[game_id] = len(self._game_ids)
                self._game_ids.append(game_id)
            games.append(self._game_rows[game_id])
        self._row_games = np.concatenate([self._row_games, np.asarray(games, np.int64)])
        first = self._vectors is None
        self._vectors = vectors if first else np.concatenate([self._vectors, vectors])
        if self.backend == "hnsw" and first:
            self._ann = Hnsw(vectors)
        elif self.backend == "hnsw":
            self._ann.index.add(np.ascontiguousarray(vectors))

    def embed(self, image: ImageInput, *, crops: Sequence[float] = QUERY_CROPS) -> np.ndarray:
        """The query's views as ``search`` compares them: (V, D) float32, V = len(crops).

        Raises:
            ImageError: the image is unusable.
            ValueError: a crop outside 0.2..1.0.
        """
        crops = tuple(float(c) for c in crops)
        if not crops or not all(0.2 <= c <= 1.0 for c in crops):
            raise ValueError(f"crops must be side fractions in 0.2..1.0, got {crops}")
        picture = load_image(image, max_pixels=self.captioner.max_pixels)
        spec = self.captioner.bundle.image_spec
        pixels = np.stack([to_pixels(_crop(picture, crop), spec) for crop in crops])  # (V, H, W, 3)
        return self._project(_normalise(self.captioner.encode(pixels)[1]))  # (V, D)

    def search(
        self, image: ImageInput, k: int = 5, *, crops: Sequence[float] = QUERY_CROPS
    ) -> list[GameHit]:
        """The ``k`` games whose covers best match the image, best first.

        Args:
            image: a path, bytes, binary file object, PIL image or uint8 HxWx3 RGB array.
            k: games returned at most; fewer when the index holds fewer.
            crops: centre crops (side fractions) of the query that are compared, each one
                encoder run; ``(1.0,)`` is twice as fast, for tightly framed images.

        Raises:
            ImageError: the image is unusable.
            ValueError: k < 1 or a crop outside 0.2..1.0.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return self.search_embedding(self.embed(image, crops=crops), k)

    def search_embedding(self, embedding: np.ndarray, k: int = 5) -> list[GameHit]:
        """``search`` from the output of ``embed``: (D,) or (V, D)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if self._vectors is None:
            return []
        views = np.atleast_2d(np.asarray(embedding, np.float32))  # (V, D)
        if views.shape[1] != self._vectors.shape[1]:
            raise ValueError(
                f"embedding has {views.shape[1]} dimensions, the index {self._vectors.shape[1]}"
            )
        # The views' mean scores a cover by its mean similarity to them: better than the best
        # view at the strongest distortions (0.964 vs 0.958 Recall@1 on the tuning queries).
        queries = views.mean(axis=0, keepdims=True)  # (1, D)
        total = len(self._vectors)
        count = min(total, 4 * k)  # rows fetched: enough for k games unless releases crowd in
        while True:
            if self._ann is not None:
                rows, scores = self._ann.top(queries, count)
            else:
                rows, scores = exact_top(self._vectors, queries, count)
            hits = self._hits(rows, scores, k)
            if len(hits) == min(k, len(self._game_ids)) or count == total:
                return hits
            count = min(total, count * 4)

    def _hits(self, rows: np.ndarray, scores: np.ndarray, k: int) -> list[GameHit]:
        hits, seen = [], set()
        for row, score in zip(rows.tolist(), scores.tolist(), strict=True):
            game = self._row_games[row]
            if game in seen:
                continue
            seen.add(game)
            path, entry_row = self._images[row]
            entry = self._entries[entry_row]
            hits.append(
                GameHit(
                    game_id=entry.game_id,
                    name=entry.name,
                    score=float(score),
                    platform=entry.platform,
                    image=path,
                    metadata=dict(entry.metadata),
                )
            )
            if len(hits) == k:
                break
        return hits

    def save(self, path: str | os.PathLike) -> Path:
        """Write the index to one file: a NumPy .npz of arrays and JSON, without pickle.

        Returns:
            The path written.
        """
        path = Path(path)
        meta = {
            "format_version": FORMAT_VERSION,
            "bundle": self._identity,
            "entries": [asdict(entry) for entry in self._entries],
            "images": self._images,
            "report": asdict(self.report),
        }
        arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        if self._vectors is not None:
            arrays["vectors"] = self._vectors
        if self._whitening is not None:
            arrays["whitening_mean"], arrays["whitening_matrix"] = self._whitening
        partial = path.with_name(path.name + ".part")
        with open(partial, "wb") as stream:  # a file object: np.savez would append ".npz"
            np.savez(stream, **arrays)
        partial.replace(path)  # never leave a half-written index behind
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        captioner: Captioner | None = None,
        backend: str = "exact",
    ) -> GameIndex:
        """Read an index written by ``save``.

        Args:
            path: the index file.
            captioner: for queries; must run the encoder the index was built with.
                Default ``Captioner()``.
            backend: as in the constructor; an "hnsw" graph is built here.

        Raises:
            ValueError: the file is missing or not a game index of this format version.
            BundleError: the captioner's encoder is not the one the index was built with.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            meta = json.loads(arrays.pop("meta").tobytes())
        except FileNotFoundError:
            raise ValueError(f"Index file not found: {path}") from None
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{path} is not a game index: {error}") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path} has index format {meta.get('format_version')!r}; "
                f"this SDK reads version {FORMAT_VERSION}"
            )
        index = cls(captioner, backend=backend)
        built, ours = meta["bundle"], index._identity
        if built["encoder_sha256"] != ours["encoder_sha256"]:
            raise BundleError(
                f"{path} was built with bundle {built['name']!r} (encoder sha256 "
                f"{built['encoder_sha256'][:12]}...), but the captioner runs {ours['name']!r} "
                f"(encoder sha256 {ours['encoder_sha256'][:12]}...): load it with a Captioner "
                "of that bundle, or rebuild the index"
            )
        if "whitening_matrix" in arrays:
            index._whitening = (arrays["whitening_mean"], arrays["whitening_matrix"])
        index._entries = [
            CatalogEntry(**{**entry, "images": tuple(entry["images"])}) for entry in meta["entries"]
        ]
        index._images = [(image, entry) for image, entry in meta["images"]]
        if "vectors" in arrays:
            index._add_rows(arrays["vectors"], [entry for _, entry in index._images])
        report = meta["report"]
        index.report = BuildReport(**{**report, "problems": tuple(report["problems"])})
        return index
