"""Find the game in any picture of it: catalogue images by embedding, and its title by text.

GameLab users upload a photo of a box or a cartridge, a title screen or a screenshot; the
answer is a game from a catalogue (catalog.py). Two kinds of evidence are fused into one
ranked list of games:

- Image: every catalogue image (cover, back cover, screenshot, title screen, logo, ...) is
  embedded by the encoder the captioner uses (its pooled output), power-normalised (signed
  square root, then L2) and whitened; a query is embedded whole and as its centre crop
  (``QUERY_CROPS``) and a game scores its best image. The whitening is learned on the first
  fill from ``IMAGE_PHOTOS`` simulated phone photos of every image (whitening.py), damping
  what framing, light and the camera change (Radenovic et al., TPAMI 2018), and each image
  is stored with the mean of its photos added, so a photo-like query lands near it.
  That finds another scan or a photo of a box (Recall@1 0.95 at the strongest distortion),
  and a title screen or screenshot when the catalogue holds a similar one.
- Text: titles are written on title screens, boxes and cartridges. The query's text is read
  with PP-OCR (ocr.py, the ``ocr`` extra) and fuzzily matched against each game's names and
  the text read in its own catalogue images at build time (text_search.py). A read that
  names no game is tried again in the image's brightest channel, then band by band.

Games rank by their image similarity plus their text similarity times a weight that grows
as the query's image evidence gets ambiguous (``rank_score``): when the best game's image is
clearly closer than the next game's (a box photo, a scan), a misread must not overturn it,
and OCR is not even run; when the images hardly tell games apart (a title screen unlike
every catalogue image), the text decides. What the query looks like (the kind of most of
its nearest catalogue images, ``LOOK_SHARE``) changes that: gameplay needs a stronger text
match, as what is written on it is seldom the title; a title screen is always read, and its
image is sure of the game only from a larger gap (``TITLE_SURE_GAP``), as title screens look
alike. The score reported estimates the chance that the hit is the game whatever the query
was: the top hit's maps its ranking value, its lead over the next game and whether text was
read through a logistic function (``CALIBRATION``, Platt scaling); the other games share
the chance that it is wrong (``RUNNERS_UP``), so the scores of a result sum to at most 1.
The constants were chosen on tuning queries of every kind
(benchmarks/tune_fusion.py, with a seed the benchmark does not use).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .captioner import Captioner
from .catalog import CatalogEntry, CatalogPath, read_catalog
from .errors import BundleError
from .index_file import IndexContents, IndexImage, read_index, write_index
from .index_media import IMAGE_PHOTOS, READ_KINDS, encode_views, text_of, view_pixels
from .media import BuildReport, MediaIntake, rom_stem
from .ocr import OCR_INSTALL, TextLine, TextReader, brightest_channel, ocr_available
from .preprocessing import ImageInput, load_for_encoder, to_pixels
from .progress import Progress, progress_callback
from .text_search import MIN_SCORE, TextMatch, TitleMatcher
from .vectors import Hnsw, exact_top, import_faiss, serial_dot
from .whitening import learn_whitening

QUERY_CROPS = (1.0, 0.7)  # views per query: whole, centre 70% (side); one encoder run each
BUILD_BATCH = 32  # images loaded and encoded at a time while building
WHITEN_MIN_IMAGES = 64  # fewer images in the first fill: no whitening (too few pairs)
PHOTO_WEIGHT = 1.0  # weight of the photos' mean against the image in the vector searched
BACKENDS = ("exact", "hnsw")
VISUAL_CANDIDATES = 30  # games the image evidence proposes for fusion
TEXT_CANDIDATES = 30  # games the text evidence proposes
# The ranking (rank_score) and its calibration, chosen by benchmarks/tune_fusion.py.
TEXT_WEIGHT = 0.0  # text similarity against image similarity when the images are clear
TEXT_BOOST = 10.0  # more text weight per unit the image gap falls short of SURE_GAP
SURE_GAP = 0.1  # image similarity of the best game minus the next: clear from here on
# Below the sure gap the text weighs at least this: just under it, the boost alone left a
# strong read (0.83, "GHAMPIONSBFEUROPE") at a sixth of its weight. Tuning queries unchanged
# (0.2-0.5), seed-2024 title screens +1 with 0.35 and 0.5.
UNSURE_TEXT_WEIGHT = 0.35
CALIBRATION = (4.80, 16.15, -0.72, -2.87)  # top hit, logistic: rank score, lead, read, bias
# Each other game gets a share of what the top hit leaves (the chance the top is wrong): a
# logistic of its rank score minus the top's, being second, bias. When the top is wrong, the
# answer is the second game only 1 time in 7 (tuning queries): the shares are small.
RUNNERS_UP = (1.57, 2.78, -4.57)
# What a query looks like: the kind of most of its nearest catalogue images (_query_look).
LOOK_NEIGHBOURS = 10  # nearest catalogue images looked at
LOOK_SHARE = 0.7  # share of them of one kind
# Gameplay (screenshots): the text on it (scores, dialogue, place names) is seldom the title
# and misreads as names, so a text match must be stronger, and a plain read naming no game
# is not read again. Chosen on the tuning queries (floor 0.6, 0.7, 0.8; share 0.5-1.0).
GAMEPLAY_MIN_TEXT = 0.7  # the text floor then, instead of text_search.MIN_SCORE
# A title screen looks like other games' (a logo on a plain screen): its image is sure of the
# game only from a larger gap, and its text is read whatever the gap. Chosen on the tuning
# queries (0.1-0.5; with a base text weight 0-1.0, which gained nothing).
TITLE_SURE_GAP = 0.4

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evidence:
    """One reason a game matched.

    Attributes:
        source: "image" (embedding similarity) or "text" (the title read).
        score: image: the query views' mean dot product with the image's (whitened,
            unit-length) vector; text: similarity 0..1.
        kind: the media kind of the catalogue image that matched (image evidence or a read
            made in it), or "name" (text matched a release or ROM name).
        image: the catalogue image that matched; None for a name.
        read: the text read in the query (text evidence).
        matched: the name or catalogue text it matched (text evidence).
    """

    source: str
    score: float
    kind: str
    image: str | None = None
    read: str | None = None
    matched: str | None = None


@dataclass(frozen=True)
class GameHit:
    """One game found for a query image.

    Attributes:
        game_id: the catalogue id (or the derived one, see catalog.py); regional releases
            sharing it are one game.
        name: the name of the best-matching release: the one whose name the text read
            matched, else the one of ``image``.
        score: the confidence 0..1 that this is the game, image and text evidence fused.
        platform: the release's system, e.g. "snes"; None if the catalogue has none.
        image: the catalogue image of the game that looked most like the query.
        metadata: the release's other catalogue fields (description, genre, ...).
        evidence: why it matched: its image evidence, then its text evidence if any.
    """

    game_id: str
    name: str
    score: float
    platform: str | None
    image: str
    metadata: dict
    evidence: tuple[Evidence, ...] = ()

    @property
    def reason(self) -> str:
        """The evidence in words: 'looks like its title_screen (0.61); read "sonic chaos" ...'."""
        parts = []
        for item in self.evidence:
            if item.source == "text":
                where = f'{item.kind} "{item.matched}"'
                parts.append(f'read "{item.read}" ~ {where} ({item.score:.2f})')
            else:
                parts.append(f"looks like its {item.kind} ({item.score:.2f})")
        return "; ".join(parts)


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
    return {"name": captioner.bundle.name, "encoder_sha256": captioner.bundle.encoder_id}


def rank_score(
    visual: float,
    text: float,
    image_gap: float,
    weights: tuple[float, float, float] = (TEXT_WEIGHT, TEXT_BOOST, SURE_GAP),
) -> float:
    """What games rank by: image similarity plus text similarity, the text weighing more as
    the query's image evidence gets ambiguous (``image_gap``: the best game's image
    similarity minus the next game's), and at least UNSURE_TEXT_WEIGHT below the sure gap.
    ``weights``: (TEXT_WEIGHT, TEXT_BOOST, SURE_GAP), other values for tuning."""
    text_weight, boost, sure_gap = weights
    weight = text_weight + boost * max(0.0, sure_gap - image_gap)
    if image_gap < sure_gap:
        weight = max(weight, UNSURE_TEXT_WEIGHT)
    return visual + text * weight


def confidence(
    score: float, lead: float, text_read: bool, calibration: Sequence[float] = CALIBRATION
) -> float:
    """The top game's ``rank_score`` and its ``lead`` over the next game's as the chance 0..1
    that it is the answer (see CALIBRATION)."""
    w_score, w_lead, w_read, bias = calibration
    logit = w_score * score + w_lead * lead + w_read * text_read + bias
    return 1.0 / (1.0 + math.exp(-logit))


def confidences(
    scores: Sequence[float],
    text_read: bool,
    calibration: Sequence[float] = CALIBRATION,
    runners_up: Sequence[float] = RUNNERS_UP,
) -> list[float]:
    """The ``rank_score`` of every candidate game, best first, as the chance 0..1 that each is
    the answer: the top one's by ``confidence``, each other's a share (RUNNERS_UP) of the
    chance that the top one is wrong, never more than the top's. They sum to at most 1: two
    games are never both near certain."""
    if not scores:
        return []
    lead = scores[0] - scores[1] if len(scores) > 1 else 1.0
    top = confidence(scores[0], lead, text_read, calibration)
    w_gap, w_second, bias = runners_up
    logits = w_gap * (np.asarray(scores[1:], np.float64) - scores[0]) + bias  # gaps <= 0
    logits[:1] += w_second
    shares = 1.0 / (1.0 + np.exp(-logits))
    shares /= max(1.0, float(shares.sum()))
    # never above the top game's: a weak top (a photo of no game in the catalogue) would
    # otherwise leave the second more than it has itself
    return [top, *np.minimum((1.0 - top) * shares, top).tolist()]


class GameIndex:
    """Catalogue images embedded by a bundle's encoder and their games' texts, searched by image.

    Make one with ``GameIndex.build(catalog)`` or ``GameIndex.load(path)``; extend it with
    ``add``. Searching is thread-safe; ``add`` must not run while another thread searches.

    Args:
        captioner: whose encoder embeds images and queries; default ``Captioner()``.
        backend: "exact" (numpy, default) or "hnsw" (faiss, approximate, for large catalogues).
        whiten: learn a whitening on the first fill (if it has WHITEN_MIN_IMAGES images or
            more); False keeps plain cosine similarity of the embeddings.
        read_text: read titles with OCR (the ``ocr`` extra): True requires it, False never
            reads, None (default) reads when it is installed.

    Raises:
        ValueError: an unknown backend.
        ImportError: the "hnsw" backend without faiss, or read_text=True without the ocr extra.
    """

    def __init__(
        self,
        captioner: Captioner | None = None,
        *,
        backend: str = "exact",
        whiten: bool = True,
        read_text: bool | None = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"Invalid backend {backend!r}, expected one of: {', '.join(BACKENDS)}")
        if backend == "hnsw":
            import_faiss()  # fail before encoding anything
        if read_text and not ocr_available():
            raise ImportError(f"read_text=True needs the ocr extra: {OCR_INSTALL}")
        self.captioner = captioner if captioner is not None else Captioner()
        self.backend = backend
        self.whiten = whiten
        self.reads_text = ocr_available() if read_text is None else read_text
        self.report = BuildReport()
        self._identity = _encoder_identity(self.captioner)
        self._entries: list[CatalogEntry] = []
        self._images: list[IndexImage] = []  # one per row of the vectors
        self._game_ids: list[str] = []
        self._game_numbers: dict[str, int] = {}
        self._game_members: list[list[int]] = []  # rows of each game
        self._row_games = np.zeros(0, np.int64)  # (M,) game of each row
        self._vectors: np.ndarray | None = None  # (M, D) as searched, set by the first add
        self._whitening: tuple[np.ndarray, np.ndarray] | None = None  # mean (D,), (D, D)
        self._ann: Hnsw | None = None
        self._matcher: TitleMatcher | None = None  # made on first use: needs rapidfuzz
        self._reader: TextReader | None = None
        self._lazy_lock = threading.Lock()

    @classmethod
    def build(
        cls,
        catalog: CatalogPath | Iterable[CatalogPath | CatalogEntry],
        *,
        media_dirs: CatalogPath | Iterable[CatalogPath] = (),
        captioner: Captioner | None = None,
        progress: Progress = True,
        backend: str = "exact",
        whiten: bool = True,
        read_text: bool | None = None,
        embeddings: str | os.PathLike | None = None,
    ) -> GameIndex:
        """Index a catalogue: gamelist.xml, CSV or JSON Lines files, or CatalogEntry objects.

        Bad entries and unusable images are skipped with a logged warning and counted in
        ``index.report``.

        Args:
            catalog: a path, or several paths and/or entries; a folder means its gamelist.xml
                files.
            media_dirs: media folders (ES-DE downloaded_media, libretro Named_* folders) beyond
                those found next to the catalogue; see ``read_catalog``.
            captioner: whose encoder to use; default ``Captioner()``.
            progress: a bar (tqdm, when installed), False for none, or a callable
                ``(images_done, images_total)``.
            backend, whiten, read_text: as in the constructor.
            embeddings: the output folder of ``gamelab-caption batch --catalog`` run on these
                catalogues (batch.py): its vectors and texts are used instead of running the
                encoder and OCR here, and the index is the same as without it.

        Raises:
            ValueError: a catalogue file is missing, of an unknown format or malformed (the
                message names the file and line), or a media folder is missing; with
                ``embeddings``, an image is not in it or it was made with another encoder.
            ImportError: ``embeddings`` without pyarrow (the ray extra).
        """
        index = cls(captioner, backend=backend, whiten=whiten, read_text=read_text)
        index.add(catalog, media_dirs=media_dirs, progress=progress, embeddings=embeddings)
        return index

    def __len__(self) -> int:
        """Number of games (distinct ids)."""
        return len(self._game_ids)

    @property
    def whitened(self) -> bool:
        """Whether the first fill had enough images (WHITEN_MIN_IMAGES) to learn a whitening."""
        return self._whitening is not None

    @property
    def images(self) -> list[IndexImage]:
        """The indexed catalogue images, one per vector."""
        return list(self._images)

    def add(
        self,
        catalog: CatalogPath | Iterable[CatalogPath | CatalogEntry],
        *,
        media_dirs: CatalogPath | Iterable[CatalogPath] = (),
        progress: Progress = True,
        embeddings: str | os.PathLike | None = None,
    ) -> BuildReport:
        """Add catalogue entries; returns what this call added (``report`` sums all calls).

        The whitening is learned by the first call only; later ones reuse it.
        Args and Raises: as in ``build``.
        """
        items = [catalog] if isinstance(catalog, (str, os.PathLike)) else list(catalog)
        entries = []
        for item in items:
            if isinstance(item, CatalogEntry):
                entries.append(item)
            else:
                entries += read_catalog(item, media_dirs=media_dirs)
        indexed = {(self._entries[image.entry].game_id, image.path) for image in self._images}
        intake = MediaIntake(entries, indexed)
        learn = self.whiten and self._vectors is None and len(intake.media) >= WHITEN_MIN_IMAGES
        if embeddings is None:
            vectors, photos, embedded = self._embed_media(intake, progress, learn or self.whitened)
        else:
            vectors, photos, embedded = self._stored_media(intake, embeddings)
            photos = photos if learn or self.whitened else None
        added: dict[int, int] = {}  # entry position in this call -> entry row in the index
        first_row = len(self._images)
        for position, image, text in embedded:
            if position not in added:
                added[position] = len(self._entries)
                self._entries.append(entries[position])
            self._images.append(IndexImage(image.path, added[position], image.kind, text))
        if vectors is not None:
            if learn:
                pairs = np.stack([np.repeat(vectors, IMAGE_PHOTOS, axis=0), photos], axis=1)
                self._whitening = learn_whitening(vectors, pairs)
            rows = self._project(vectors)
            if photos is not None:  # each image with its photos: photo-like queries land near
                views = self._project(photos).reshape(len(vectors), IMAGE_PHOTOS, -1)
                rows = _unit(rows + PHOTO_WEIGHT * views.mean(axis=1))
            self._add_rows(rows, first_row)
        kinds = Counter(image.kind for _, image, _ in embedded)
        report = intake.report(built=added.keys(), images=len(embedded), kinds=kinds)
        self.report = self.report + report
        return report

    def _embed_media(self, intake: MediaIntake, progress: Progress, with_photos: bool):
        """Encode images in batches, ``IMAGE_PHOTOS`` simulated photos of each if asked,
        and read the text of those of READ_KINDS (see index_media.py).

        Returns:
            images (N, D) or None, photos (N * IMAGE_PHOTOS, D) or None (image-major), and
            [(entry position, MediaImage, text read)] of the N images that could be read.
        """
        spec, total = self.captioner.bundle.image_spec, len(intake.media)
        count = IMAGE_PHOTOS if with_photos else 0
        update, close = progress_callback(progress, total, "Indexing images")
        images, photos, embedded = [], [], []
        previous = None  # the previous image, None if unusable: a box beside this one
        try:
            for start in range(0, total, BUILD_BATCH):
                views = []
                for number in range(start, min(start + BUILD_BATCH, total)):
                    position, media = intake.media[number]
                    image = intake.open(position, media, self.captioner.max_pixels)
                    clutter, previous = previous, image
                    if image is None:
                        continue
                    views.append(view_pixels(image, spec, media.path, clutter, count))
                    read = self.reads_text and media.kind in READ_KINDS
                    embedded.append((position, media, text_of(self.read(image)) if read else ""))
                if views:
                    encoded = _normalise(encode_views(self.captioner, np.concatenate(views)))
                    encoded = encoded.reshape(len(views), 1 + count, -1)  # (n, 1 + photos, D)
                    images.append(encoded[:, 0])
                    photos.append(encoded[:, 1:].reshape(-1, encoded.shape[2]))  # (n * photos, D)
                update(min(start + BUILD_BATCH, total), total)
        finally:
            close()
        if not images:
            return None, None, embedded
        return np.concatenate(images), np.concatenate(photos) if with_photos else None, embedded

    def _stored_media(self, intake: MediaIntake, embeddings: str | os.PathLike):
        """``_embed_media``'s results, read from a batch job's output (batch.py, catalogue
        mode) instead of computed: the same vectors, the same texts, the same skips.

        Raises:
            ValueError: an image of the catalogue is not in the output (another catalogue, or
                the same one in another order or under another folder), or the output was
                made by another encoder or without the text this index reads.
            ImportError: pyarrow (the ray extra) is not installed.
        """
        from .batch_output import read_catalog_rows  # pyarrow: the ray extra

        stored = read_catalog_rows(embeddings, self._identity, self.reads_text)
        images, photos, embedded, absent = [], [], [], []
        previous = None  # as the batch job named each image's clutter
        for position, media in intake.media:
            key = (os.path.abspath(media.path), previous)
            previous = key[0]
            row = stored.get(key)
            if row is None:
                absent.append(media.path)
            elif row.error is not None:
                intake.unusable(position, media, row.error, missing=row.missing)
            else:
                images.append(row.embedding)
                photos.append(row.photos)
                read = self.reads_text and media.kind in READ_KINDS
                embedded.append((position, media, row.text if read else ""))
        if absent:
            raise ValueError(
                f"{len(absent)} of {len(intake.media)} catalogue images are not in {embeddings} "
                f"(first: {absent[0]}): run 'gamelab-caption batch --catalog' on the same "
                "catalogues, in the same order, with that output again (it adds what is missing)"
            )
        if not images:
            return None, None, embedded
        return _normalise(np.stack(images)), _normalise(np.concatenate(photos)), embedded

    def _project(self, vectors: np.ndarray) -> np.ndarray:
        """Normalised embeddings (N, D) -> the space searched (N, D), unit length."""
        if self._whitening is None:
            return vectors
        mean, matrix = self._whitening
        return _unit(serial_dot(vectors - mean, matrix.T))  # (N, D); the matrix is symmetric

    def _add_rows(self, vectors: np.ndarray, first_row: int) -> None:
        """File rows ``first_row``.. (already in ``_images``) under their games."""
        games = []
        for row in range(first_row, len(self._images)):
            image = self._images[row]
            entry = self._entries[image.entry]
            if entry.game_id not in self._game_numbers:
                self._game_numbers[entry.game_id] = len(self._game_ids)
                self._game_ids.append(entry.game_id)
                self._game_members.append([])
            game = self._game_numbers[entry.game_id]
            self._game_members[game].append(row)
            games.append(game)
        self._matcher = None  # rebuilt with the new rows' texts when text is next matched
        self._row_games = np.concatenate([self._row_games, np.asarray(games, np.int64)])
        first = self._vectors is None
        self._vectors = vectors if first else np.concatenate([self._vectors, vectors])
        if self.backend == "hnsw" and first:
            self._ann = Hnsw(vectors)
        elif self.backend == "hnsw":
            self._ann.index.add(np.ascontiguousarray(vectors))

    def read(self, image: ImageInput | Image.Image) -> list[TextLine]:
        """The text lines OCR reads in an image (the ``ocr`` extra); [] when read_text is off.

        Raises:
            ImageError: the image is unusable.
        """
        if not self.reads_text:
            return []
        return self._text_reader().read(image, max_pixels=self.captioner.max_pixels)

    def _text_reader(self) -> TextReader:
        with self._lazy_lock:  # created on first use: it loads two ONNX models
            if self._reader is None:
                self._reader = TextReader()
            return self._reader

    def embed(self, image: ImageInput, *, crops: Sequence[float] = QUERY_CROPS) -> np.ndarray:
        """The query's views as ``search`` compares them: (V, D) float32, V = len(crops).

        Raises:
            ImageError: the image is unusable.
            ValueError: a crop outside 0.2..1.0.
        """
        crops = _check_crops(crops)
        return self._embed_picture(self._load_query(image), crops)

    def _load_query(self, image: ImageInput) -> Image.Image:
        # As Captioner.caption decodes, so the server's one decode of an upload serves both;
        # the views (224 px) and OCR's detector (320 px) see fewer pixels than it keeps.
        spec = self.captioner.bundle.image_spec
        return load_for_encoder(image, spec, max_pixels=self.captioner.max_pixels)

    def _embed_picture(self, picture: Image.Image, crops: tuple[float, ...]) -> np.ndarray:
        spec = self.captioner.bundle.image_spec
        pixels = np.stack([to_pixels(_crop(picture, crop), spec) for crop in crops])  # (V, H, W, 3)
        return self._project(_normalise(self.captioner.encode(pixels)[1]))  # (V, D)

    def search(
        self,
        image: ImageInput,
        k: int = 5,
        *,
        crops: Sequence[float] = QUERY_CROPS,
        read_text: bool | None = None,
    ) -> list[GameHit]:
        """The ``k`` games the image most likely shows, best first.

        Args:
            image: a path, bytes, binary file object, PIL image or uint8 HxWx3 RGB array.
            k: games returned at most; fewer when the index holds fewer.
            crops: centre crops (side fractions) of the query that are compared, each one
                encoder run; ``(1.0,)`` is twice as fast, for tightly framed images.
            read_text: True reads the query's text (OCR), False never; None (default) reads
                it unless one game's image is clearly the closest (by SURE_GAP; OCR costs
                ~100-300 ms, twice that when the plain read names no game and the image is
                read again in its brightest channel, and ~40 ms more when that names none
                either and its horizontal bands are recognised whole (a logo the detector
                misses); a query that looks like gameplay is read once and needs a stronger
                text match, one that looks like a title screen is always read, see
                LOOK_SHARE).
                Without the ocr extra nothing is read.

        Raises:
            ImageError: the image is unusable.
            ValueError: k < 1 or a crop outside 0.2..1.0.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        crops = _check_crops(crops)
        picture = self._load_query(image)  # decoded once
        views = self._embed_picture(picture, crops)
        if read_text is False or not self.reads_text or self._vectors is None:
            return self.search_embedding(views, k)
        look = self._query_look(views)
        if read_text is None and look != "title_screen":
            # no OCR when one game's image is clearly the closest
            hits = self.search_embedding(views, max(k, 2))
            images = [hit.evidence[0].score for hit in hits] + [-1.0]
            if hits and images[0] - images[1] >= SURE_GAP:
                return hits[:k]
        lines = [line.text for line in self.read(picture)]
        if look != "screenshot":  # a stylised logo may read in a second way
            for second_read in (self._read_brightest, self._read_bands):
                if self._names_a_game(lines):
                    break
                lines = second_read(picture)
        return self._fuse(views, k, lines, look)

    def _read_brightest(self, picture: Image.Image) -> list[str]:
        """The lines read in each pixel's brightest channel (see ocr.brightest_channel)."""
        return [line.text for line in self.read(brightest_channel(picture))]

    def _read_bands(self, picture: Image.Image) -> list[str]:
        """The horizontal bands of the picture, each recognised whole (TextReader.read_bands)."""
        return [line.text for line in self._text_reader().read_bands(picture)]

    def _names_a_game(self, lines: list[str]) -> bool:
        """Whether the lines read match some game's name or text (at least MIN_SCORE)."""
        titles = self._titles()
        read = titles.clean(lines)
        return bool(read and titles.match(read, 1, lines=lines))

    def _query_look(self, views: np.ndarray) -> str:
        """The media kind a query (V, D) looks like: that of at least LOOK_SHARE of its
        LOOK_NEIGHBOURS nearest catalogue images, or "" when no kind has that share."""
        rows = self._nearest_rows(views.mean(axis=0, keepdims=True), LOOK_NEIGHBOURS)
        kind, count = Counter(self._images[row].kind for row in rows.tolist()).most_common(1)[0]
        return kind if count >= LOOK_SHARE * len(rows) else ""

    def search_embedding(
        self, embedding: np.ndarray, k: int = 5, *, text: str | Sequence[str] = ()
    ) -> list[GameHit]:
        """``search`` from the output of ``embed``, (D,) or (V, D), and the lines read, if any."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if self._vectors is None:
            return []
        views = np.atleast_2d(np.asarray(embedding, np.float32))  # (V, D)
        if views.ndim != 2 or views.shape[1] != self._vectors.shape[1]:
            raise ValueError(
                f"embedding has shape {views.shape}, the index {self._vectors.shape[1]} dimensions"
            )
        lines = [text] if isinstance(text, str) else list(text)
        return self._fuse(views, k, lines)

    def _fuse(
        self, views: np.ndarray, k: int, lines: list[str], look: str | None = None
    ) -> list[GameHit]:
        """Rank games by the query's views (V, D) and the lines read in it; ``look`` is
        ``_query_look(views)`` when the caller has it already (None: found here if needed)."""
        # The views' mean scores an image by its mean similarity to them: better than the best
        # view at the strongest distortions (0.964 vs 0.958 Recall@1 on the tuning queries).
        query = views.mean(axis=0, keepdims=True)  # (1, D)
        titles = self._titles() if lines else None
        read = titles.clean(lines) if titles is not None else ""
        if look is None:
            look = self._query_look(views) if read else ""
        text_floor = GAMEPLAY_MIN_TEXT if look == "screenshot" else MIN_SCORE
        matches = titles.match(read, TEXT_CANDIDATES, text_floor, lines=lines) if read else {}
        sure_gap = TITLE_SURE_GAP if look == "title_screen" else SURE_GAP
        games = list(dict.fromkeys(self._visual_candidates(query, k) + list(matches)))
        rows = np.concatenate([self._game_members[game] for game in games])  # (R,)
        similarity = serial_dot(query, self._vectors[rows])[0]  # (R,)
        best: dict[int, tuple[float, int]] = {}  # game -> (similarity, row)
        for row, score in zip(rows.tolist(), similarity.tolist(), strict=True):
            game = self._row_games[row]
            if game not in best or score > best[game][0]:
                best[game] = (score, row)
        images = sorted((score for score, _ in best.values()), reverse=True) + [-1.0]
        image_gap = images[0] - images[1]
        weights = (TEXT_WEIGHT, TEXT_BOOST, sure_gap)
        ranked = []
        for game in games:
            similarity, _ = best[game]
            text = matches[game].score if game in matches else 0.0
            ranked.append((rank_score(similarity, text, image_gap, weights), similarity, game))
        ranked.sort(key=lambda item: (-item[0], -item[1]))
        chances = confidences([score for score, _, _ in ranked], bool(read))
        return [
            self._hit(game, similarity, best[game][1], matches.get(game), chance)
            for (_, similarity, game), chance in zip(ranked[:k], chances, strict=False)
        ]

    def _titles(self) -> TitleMatcher:
        """Each game's names (releases, ROM files) and the text read in its images."""
        with self._lazy_lock:
            if self._matcher is None:
                matcher = TitleMatcher()
                for game in range(len(self._game_members)):
                    for release in self._releases(game):
                        matcher.add(game, release.name, "name")
                        if release.rom:
                            matcher.add(game, rom_stem(release.rom), "name")
                for game, rows in enumerate(self._game_members):  # reads after every name:
                    for row in rows:  # their cleaning keeps the words names use
                        if self._images[row].text:
                            matcher.add(game, self._images[row].text, self._images[row].kind)
                self._matcher = matcher
            return self._matcher

    def _nearest_rows(self, query: np.ndarray, count: int) -> np.ndarray:
        """The (at most) ``count`` catalogue images nearest the query (1, D), best first."""
        count = min(count, len(self._vectors))
        if self._ann is not None:
            return self._ann.top(query, count)[0]
        return exact_top(self._vectors, query, count)[0]

    def _visual_candidates(self, query: np.ndarray, k: int) -> list[int]:
        """Games of the rows nearest the query (1, D), best first: max(k, VISUAL_CANDIDATES)."""
        wanted = max(k, VISUAL_CANDIDATES)
        total = len(self._vectors)
        count = min(total, 4 * wanted)  # rows: enough unless releases crowd in
        while True:
            rows = self._nearest_rows(query, count)
            games = list(dict.fromkeys(self._row_games[rows].tolist()))
            if len(games) >= min(wanted, len(self._game_ids)) or count == total:
                return games[:wanted]
            count = min(total, count * 4)

    def _hit(
        self,
        game: int,
        similarity: float,
        row: int,
        match: TextMatch | None,
        score: float,
    ) -> GameHit:
        image = self._images[row]
        entry = self._entries[image.entry]
        if match is not None and match.source == "name":  # the release the text names
            entry = self._release_named(game, match.matched) or entry
        evidence = [Evidence("image", similarity, image.kind, image=image.path)]
        if match is not None:
            evidence.append(
                Evidence("text", match.score, match.source, read=match.read, matched=match.matched)
            )
        return GameHit(
            game_id=entry.game_id,
            name=entry.name,
            score=score,
            platform=entry.platform,
            image=image.path,
            metadata=dict(entry.metadata),
            evidence=tuple(evidence),
        )

    def _releases(self, game: int) -> list[CatalogEntry]:
        """The catalogue entries of game number ``game``, in index order."""
        entries = dict.fromkeys(self._images[row].entry for row in self._game_members[game])
        return [self._entries[entry] for entry in entries]

    def _release_named(self, game: int, name: str) -> CatalogEntry | None:
        """The release of game number ``game`` called ``name`` (or whose ROM is), if any."""
        for release in self._releases(game):
            if name in (release.name, release.rom and rom_stem(release.rom)):
                return release
        return None

    def save(self, path: str | os.PathLike):
        """Write the index to one file: a NumPy .npz of arrays and JSON, without pickle.

        Returns:
            The path written.
        """
        contents = IndexContents(
            self._identity, self._entries, self._images, self.report, self._vectors,
            self._whitening,
        )  # fmt: skip
        return write_index(path, contents)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        captioner: Captioner | None = None,
        backend: str = "exact",
        read_text: bool | None = None,
    ) -> GameIndex:
        """Read an index written by ``save``.

        Args:
            path: the index file.
            captioner: for queries; must run the encoder the index was built with.
                Default ``Captioner()``.
            backend, read_text: as in the constructor; an "hnsw" graph is built here.

        Raises:
            IndexFileError: (a ValueError) the file is missing, not a game index of this
                format version, or malformed; the message names the problem.
            BundleError: the captioner's encoder is not the one the index was built with.
        """
        contents = read_index(path)
        index = cls(captioner, backend=backend, read_text=read_text)
        built, ours = contents.bundle, index._identity
        if built["encoder_sha256"] != ours["encoder_sha256"]:
            raise BundleError(
                f"{path} was built with bundle {built['name']!r} (encoder sha256 "
                f"{built['encoder_sha256'][:12]}...), but the captioner runs {ours['name']!r} "
                f"(encoder sha256 {ours['encoder_sha256'][:12]}...): load it with a Captioner "
                "of that bundle, or rebuild the index"
            )
        index._whitening = contents.whitening
        index._entries = contents.entries
        index._images = list(contents.images)
        if contents.vectors is not None:
            index._add_rows(contents.vectors, 0)
        index.report = contents.report
        return index


def _check_crops(crops: Sequence[float]) -> tuple[float, ...]:
    crops = tuple(float(c) for c in crops)
    if not crops or not all(0.2 <= c <= 1.0 for c in crops):
        raise ValueError(f"crops must be side fractions in 0.2..1.0, got {crops}")
    return crops
