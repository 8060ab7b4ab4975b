"""Caption and embed more images than one machine can: Ray Data over a pool of Captioners.

``run(inputs, output)`` (the ``gamelab-caption batch`` command) lists the images (folders,
globs, tables of paths, or game catalogues: batch_inputs.py), leaves out those the output
already holds, and streams the rest through ``ray.data``'s ``map_batches`` over a fixed pool
of actors, each loading the bundle once (batch_worker.py). The driver writes the rows as they
come back, as Parquet parts (batch_output.py), with a progress bar in images per second.

Without ``address``, Ray runs on this machine (``ray.init()`` in this process: no cluster to
set up); with it, the job joins an existing cluster, whose nodes need this package (and the
bundle, if it is a folder) installed. Every image file must be readable at the same path on
every node (a shared file system).

Batches are cut by the driver: one Ray block of ``batch_size`` rows per batch, in input
order, so an actor's batch is exactly the ``caption_batch`` chunk a single process would
decode (captions can depend on what an image is batched with: README, Quantisation).

When an actor dies, Ray restarts it and runs its batch again (Ray Data's actor pools retry
tasks without limit); the driver drops rows it has already written, so every image is in the
output exactly once. Ray and pyarrow are imported inside ``run``: ``import gamelab_caption``
never loads them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

from .batch_inputs import (
    BatchItem,
    collect_catalog_media,
    collect_paths,
    import_extra,
    import_pyarrow,
)
from .batch_output import PartWriter, done_keys
from .batch_worker import BatchCaptioner
from .bundle import DEFAULT_MODEL, load_bundle
from .captioner import BATCH_SIZE, DecodeOptions
from .errors import BatchClusterError
from .progress import Progress, progress_callback

FORMAT_VERSION = 1  # of the output's columns and settings
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOptions:
    """What a batch job computes and on what resources.

    Attributes:
        model: a bundled model name, or a bundle folder every node can read.
        caption: write ``caption``, ``score`` and ``alternatives``.
        embed: write ``embedding``: the encoder's pooled embedding, L2-normalised, as
            ``Captioner.encode`` returns it (and ``GameIndex`` starts from).
        beam_size, max_length: decoding, as in ``Captioner.caption``.
        catalog: the inputs are game catalogues (gamelist.xml, CSV, JSON Lines): process
            their media as ``GameIndex.build`` does, with simulated photos and title text, so
            ``GameIndex.build(..., embeddings=output)`` assembles the index from the output.
        media_dirs: catalogue mode: media folders, as in ``GameIndex.build``.
        read_text: catalogue mode: read titles with OCR (the ocr extra, on every node); None
            reads them when the ocr extra is installed here, as ``GameIndex`` does.
        path_column: the column of image paths in input tables.
        batch_size: images per actor call; a multiple of the encoder's 16-image chunks.
            The default is ``caption_batch``'s chunk, so captions match it exactly.
        actors: actors in the pool; default the cluster's CPUs (GPUs) divided by ``num_cpus``
            (``num_gpus``).
        num_cpus: CPUs reserved per actor; also its ONNX Runtime threads (at least 1).
        num_gpus: GPUs per actor (may be a fraction); above 0 the actors run ONNX Runtime's
            CUDA provider where onnxruntime-gpu is installed, else CPU only.

    Raises:
        ValueError: nothing to compute, or a value out of range.
    """

    model: str = DEFAULT_MODEL
    caption: bool = True
    embed: bool = True
    beam_size: int = 3
    max_length: int | None = None
    catalog: bool = False
    media_dirs: tuple[str, ...] = ()
    read_text: bool | None = None
    path_column: str = "path"
    batch_size: int = BATCH_SIZE
    actors: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self):
        if not (self.caption or self.embed):
            raise ValueError("Nothing to compute: caption and embed are both off")
        DecodeOptions(beam_size=self.beam_size, max_length=self.max_length)  # checks them
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.actors is not None and self.actors < 1:
            raise ValueError(f"actors must be >= 1, got {self.actors}")
        if self.num_cpus <= 0 or self.num_gpus < 0:
            raise ValueError(
                f"num_cpus must be > 0 and num_gpus >= 0, got {self.num_cpus}, {self.num_gpus}"
            )


@dataclass(frozen=True)
class BatchReport:
    """What a run did.

    Attributes:
        output: the output folder.
        images: images in the inputs.
        skipped: of those, already in the output (done by an earlier run).
        processed: rows written by this run.
        errors: of those, images that could not be used (their row has the error).
        seconds: wall time of the processing, Ray's start included.
        actors: actors in the pool (0 when nothing was left to do).
    """

    output: str
    images: int
    skipped: int
    processed: int
    errors: int
    seconds: float
    actors: int

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


def import_ray():
    return import_extra("ray", "data")


def _settings(options: BatchOptions) -> dict:
    """What the output's rows were made with, stored in every part (compared on resume)."""
    bundle = load_bundle(options.model)
    read_text = options.read_text
    if options.catalog and read_text is None:
        from .ocr import ocr_available

        read_text = ocr_available()
    return {
        "format_version": FORMAT_VERSION,
        "model_name": bundle.name,
        "encoder_sha256": bundle.encoder_id,
        "caption": options.caption,
        "embed": options.embed or options.catalog,  # the index needs the embedding
        "beam_size": options.beam_size if options.caption else None,
        "max_length": options.max_length if options.caption else None,
        "catalog": options.catalog,
        "read_text": bool(options.catalog and read_text),
    }


def _items(inputs: Iterable, options: BatchOptions) -> list[BatchItem]:
    if options.catalog:
        return collect_catalog_media(inputs, options.media_dirs)
    return [BatchItem(path) for path in collect_paths(inputs, options.path_column)]


def _pool_size(ray, options: BatchOptions) -> int:
    if options.actors is not None:
        return options.actors
    resources = ray.cluster_resources()
    if options.num_gpus > 0:
        return max(1, int(resources.get("GPU", 0) // options.num_gpus))
    return max(1, int(resources.get("CPU", 1) // options.num_cpus))


def run(
    inputs: Iterable[str | os.PathLike],
    output: str | os.PathLike,
    options: BatchOptions = BatchOptions(),
    *,
    address: str | None = None,
    progress: Progress = True,
) -> BatchReport:
    """Caption and/or embed images on Ray, one Parquet row per image in ``output``.

    Rows: ``path`` (absolute), ``error`` and ``error_type`` (null when the image was
    usable), ``caption``, ``score``, ``alternatives`` (list of {caption, score}) when
    captioning, ``embedding`` (D floats) when embedding; in catalogue mode also ``kind``,
    ``clutter``, ``photos`` and ``text`` (see index_media.py). A re-run with the same
    output processes only the images it does not hold yet.

    Args:
        inputs: folders (searched recursively), globs, image files, and tables (Parquet,
            CSV, JSON Lines) with a column of image paths; catalogues in catalogue mode.
        output: the output folder (Parquet parts), created if needed.
        options: what to compute and on what (BatchOptions).
        address: an existing Ray cluster (e.g. "auto" or "ray://head:10001"); default a
            local one started here, unless this process is already connected to one.
        progress: a bar (tqdm, when installed), False for none, or a callable
            ``(images_done, images_total)``, called after each batch.

    Raises:
        BatchInputError: an input is missing, unreadable, or has no path column; or the
            output holds rows made with other settings.
        BundleError: the model bundle is unusable.
        ImportError: Ray Data or pyarrow is not installed (the ray extra).
        BatchClusterError: Ray could not start or reach its cluster.
    """
    pyarrow = import_pyarrow()
    ray = import_ray()
    output = os.fspath(output)
    items = _items(inputs, options)
    settings = _settings(options)
    done = done_keys(output, settings)
    todo = [item for item in items if item.key not in done]
    skipped = len(items) - len(todo)
    if not todo:
        return BatchReport(output, len(items), skipped, 0, 0, 0.0, 0)
    started = time.perf_counter()
    ours = not ray.is_initialized()
    if ours:
        local = {"include_dashboard": False} if address is None else {}
        try:
            ray.init(address=address, logging_level=logging.WARNING, **local)
        except Exception as error:  # Ray raises bare Exception / ConnectionError here
            where = "start a local cluster" if address is None else f"reach the cluster {address}"
            raise BatchClusterError(
                f"Ray could not {where}: {error}. On a busy machine try again, or start a "
                "cluster with `ray start --head` and pass its address (--address auto)"
            ) from None
    writer = PartWriter(output, settings)
    errors = 0
    update, close = progress_callback(progress, len(todo), "Captioning")
    try:
        actors = _pool_size(ray, options)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours counts images, not Ray's operators
        rows = {"path": [item.path for item in todo]}
        if options.catalog:
            rows.update(kind=[item.kind for item in todo], clutter=[item.clutter for item in todo])
        table = pyarrow.table(rows)
        size = options.batch_size
        blocks = [table.slice(start, size) for start in range(0, len(todo), size)]
        gpu = options.num_gpus > 0
        results = ray.data.from_arrow(blocks).map_batches(
            BatchCaptioner,
            fn_constructor_kwargs={
                "settings": settings,
                "model": str(options.model),
                "providers": None if gpu else ["CPUExecutionProvider"],
                "threads": max(1, int(options.num_cpus)),
            },
            batch_size=size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=options.num_cpus,
            num_gpus=options.num_gpus,
        )
        written: set = set()  # keys this run wrote: a retried batch's rows are dropped
        for batch in results.iter_batches(batch_size=None, batch_format="pyarrow"):
            paths = batch.column("path").to_pylist()
            clutters = [None] * len(paths)
            if options.catalog:
                clutters = batch.column("clutter").to_pylist()
            keys = list(zip(paths, clutters, strict=True))
            fresh = [number for number, key in enumerate(keys) if key not in written]
            if len(fresh) < len(keys):
                logger.info("Dropped %d rows of a retried batch", len(keys) - len(fresh))
                batch = batch.take(fresh)
            written.update(keys)
            errors += batch.num_rows - batch.column("error").null_count
            writer.add(batch)
            update(len(written), len(todo))
    finally:
        writer.flush()
        close()
        if ours:
            ray.shutdown()
    seconds = time.perf_counter() - started
    return BatchReport(output, len(items), skipped, writer.rows, errors, seconds, actors)
