"""Shared fixtures of the benchmark suite: which bundles, which images, which thread settings.

Out of the box the suite measures the bundles shipped in the package (no training run needed);
``GAMELAB_BENCH_RUNS`` adds the FP32 and INT8 bundles of ``gamelab-export`` run folders, whose
trained weights the TensorFlow baselines then use too. Every pipeline reads the same Flickr8k
test images. Speed benchmarks run at each thread setting (ONNX Runtime's and TensorFlow's
default, 1, and the core count): the summary compares each side at its best and keeps the
per-setting tables. Settings are environment variables, listed in benchmarks/README.md;
``GAMELAB_BENCH_SMOKE=1`` shrinks every size so that CI runs the whole suite in minutes.

At the end, the pytest-benchmark JSON (always written, default benchmarks/results/) is
summarised by report.py into summary.json, summary.md and comparison.png beside it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from gamelab_export.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
# helper modules beside the benchmarks (bench_photos, cpu_share, recognition_data, tf_baseline)
sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_share  # noqa: E402

DEFAULT_DATA = "../shared/data/flickr8k"
BEAM_SIZES = (1, 3)
CUDA = "CUDAExecutionProvider"
DEFAULT_THREADS = "default"  # the runtime's own choice: what ``Captioner()`` users get
SMOKE = os.environ.get("GAMELAB_BENCH_SMOKE") == "1"
DEFAULT_OUTPUT = "benchmarks/results/smoke" if SMOKE else "benchmarks/results"
MIN_ROUNDS = 1 if SMOKE else 3  # timed rounds per benchmark, at least
# Smoke mode: the other benchmark files' own sizes, at their smallest (each can still be set).
SMOKE_SIZES = {
    "GAMELAB_BENCH_GAMES": "40",
    "GAMELAB_BENCH_QUERIES": "5",
    "GAMELAB_BENCH_LATENCY_ROUNDS": "5",
    "GAMELAB_BENCH_RECOGNITION_GAMES": "8",
    "GAMELAB_BENCH_RECOGNITION_QUERIES": "3",
    "GAMELAB_BENCH_SECONDS": "3",
    "GAMELAB_BENCH_CLIENTS": "2",
}
if SMOKE:
    for _name, _value in SMOKE_SIZES.items():
        os.environ.setdefault(_name, _value)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise pytest.UsageError(f"{name}={raw!r} must be an integer") from None
    if value < 1:
        raise pytest.UsageError(f"{name} must be >= 1, got {value}")
    return value


def _thread_settings(raw: str) -> tuple[int | None, ...]:
    """ "default,1,2" -> (None, 1, 2); None lets the runtime choose."""
    settings: list[int | None] = []
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        if part == DEFAULT_THREADS:
            value = None
        elif part.isdigit() and int(part) >= 1:
            value = int(part)
        else:
            raise pytest.UsageError(
                f"GAMELAB_BENCH_THREADS={raw!r}: expected 'default' or counts >= 1, comma-separated"
            )
        if value not in settings:
            settings.append(value)
    if not settings:
        raise pytest.UsageError("GAMELAB_BENCH_THREADS is empty")
    return tuple(settings)


def _batches(raw: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        message = f"GAMELAB_BENCH_BATCH={raw!r}: expected sizes, comma-separated"
        raise pytest.UsageError(message) from None
    if not sizes or min(sizes) < 1:
        raise pytest.UsageError(f"GAMELAB_BENCH_BATCH={raw!r}: sizes must be >= 1")
    return sizes


def threads_label(threads: int | None) -> str:
    return DEFAULT_THREADS if threads is None else str(threads)


def _repo_path(raw: str) -> Path:
    path = Path(raw).expanduser()
    return path if path.is_absolute() else REPO / path


@dataclass(frozen=True)
class Settings:
    """What every benchmark shares (environment variables in brackets).

    Attributes:
        runs: ``gamelab-export`` run folders whose bundles are measured besides the shipped
            ones (GAMELAB_BENCH_RUNS, comma-separated; none by default).
        data: Flickr8k folder whose test split is read (GAMELAB_BENCH_DATA).
        images: test images used, the first N by file name (GAMELAB_BENCH_IMAGES).
        batches: the throughput batch sizes; batch 1 is always measured too
            (GAMELAB_BENCH_BATCH, comma-separated).
        thread_settings: intra-op thread counts the speed benchmarks try, None for the
            runtime's default (GAMELAB_BENCH_THREADS, default "default,1,<cores>").
        threads: the one setting of benchmarks that do not sweep (search, start-up, GEMM
            peak): the core count, as a service would be given.
        starts: fresh processes timed per bundle (GAMELAB_BENCH_STARTS).
        quality_images: Flickr8k test images captioned for the quality check, the first N
            (GAMELAB_BENCH_QUALITY_IMAGES; default all 1,000).
        output: folder for the JSON, markdown and PNG (GAMELAB_BENCH_OUTPUT).
        default_bundle: bundle name of the SDK's default model (GAMELAB_BENCH_DEFAULT).
        smoke: every size at its smallest, to check the suite runs (GAMELAB_BENCH_SMOKE=1).
    """

    runs: tuple[Path, ...]
    data: Path
    images: int
    batches: tuple[int, ...]
    thread_settings: tuple[int | None, ...]
    threads: int
    starts: int
    quality_images: int
    output: Path
    default_bundle: str
    smoke: bool = False


def load_settings() -> Settings:
    raw_runs = os.environ.get("GAMELAB_BENCH_RUNS") or os.environ.get("GAMELAB_BENCH_RUN") or ""
    cores = os.cpu_count() or 1
    default_threads = DEFAULT_THREADS if SMOKE else f"{DEFAULT_THREADS},1,{cores}"
    return Settings(
        runs=tuple(_repo_path(r.strip()) for r in raw_runs.split(",") if r.strip()),
        data=_repo_path(os.environ.get("GAMELAB_BENCH_DATA", DEFAULT_DATA)),
        images=_env_int("GAMELAB_BENCH_IMAGES", 2 if SMOKE else 32),
        batches=_batches(os.environ.get("GAMELAB_BENCH_BATCH", "2" if SMOKE else "8,32")),
        thread_settings=_thread_settings(os.environ.get("GAMELAB_BENCH_THREADS", default_threads)),
        threads=cores,
        starts=_env_int("GAMELAB_BENCH_STARTS", 1 if SMOKE else 3),
        quality_images=_env_int("GAMELAB_BENCH_QUALITY_IMAGES", 4 if SMOKE else 1000),
        output=_repo_path(os.environ.get("GAMELAB_BENCH_OUTPUT", DEFAULT_OUTPUT)),
        default_bundle=os.environ.get("GAMELAB_BENCH_DEFAULT", "efficientnet-lite0"),
        smoke=SMOKE,
    )


@dataclass(frozen=True)
class RunCase:
    """One ``gamelab-export`` run folder: its config, weights and bundles.

    Attributes:
        path: the run folder.
        config: its TrainConfig, with ``output`` pointing at ``path``.
        bundles: precision ("fp32", "int8") -> bundle folder.
        problem: why this run cannot be benchmarked, or None.
    """

    path: Path
    config: TrainConfig | None = None
    bundles: dict[str, Path] = field(default_factory=dict)
    problem: str | None = None

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class BundleCase:
    """One bundle to measure: shipped in the package, or made by a run folder.

    Attributes:
        path: the bundle folder.
        precision: "fp32" or "int8", as its manifest says.
        encoder: the encoder's name (inception_v3, efficientnet_lite0, ...).
        run: the run folder that made it; None for a shipped bundle.
    """

    path: Path
    precision: str
    encoder: str
    run: RunCase | None = None

    @classmethod
    def of(cls, path: Path, run: RunCase | None = None) -> BundleCase:
        manifest = json.loads((path / "manifest.json").read_text())
        return cls(path, manifest.get("precision", "fp32"), manifest["encoder"]["name"], run)

    @property
    def source(self) -> str:
        return self.run.name if self.run else "shipped"

    @property
    def bundle_name(self) -> str:
        return self.path.name.removesuffix("-fp32")

    @property
    def id(self) -> str:
        return f"{self.source}-{self.bundle_name}-{self.precision}"

    @property
    def fields(self) -> dict[str, str]:
        """What every SDK benchmark record says about the bundle it measured."""
        return {
            "pipeline": "sdk",
            "run": self.source,
            "encoder": self.encoder,
            "bundle": self.bundle_name,
            "precision": self.precision,
        }


def load_run(path: Path) -> RunCase:
    from gamelab_export.config import TrainConfig
    from gamelab_export.pipeline import bundle_dirs

    if not (path / "config.json").is_file():
        return RunCase(path, problem=f"{path} has no config.json: not a gamelab-export run")
    config = TrainConfig.from_saved(json.loads((path / "config.json").read_text()))
    config = dataclasses.replace(config, output=str(path))
    bundles = {p: d for p, d in bundle_dirs(config).items() if (d / "manifest.json").is_file()}
    problem = None if bundles else f"{path}/bundles holds no bundle: run `gamelab-export bundle`"
    return RunCase(path, config, bundles, problem)


def _shipped_bundles() -> list[BundleCase]:
    from gamelab_caption import bundled_models
    from gamelab_caption.bundle import load_bundle

    return [BundleCase.of(load_bundle(name, verify=False).path) for name in bundled_models()]


_SETTINGS = load_settings()
_RUNS = [load_run(path) for path in _SETTINGS.runs]
_BUNDLES = _shipped_bundles() + [
    BundleCase.of(path, run) for run in _RUNS if not run.problem for path in run.bundles.values()
]
_WRITTEN: list[Path] = []  # report files, listed at the end of the run
_LOAD_AT_START = os.getloadavg()  # other work on the machine skews every number
_CPU_AT_START = cpu_share.now()  # and what others use of the CPUs while the suite runs


def _bundle_params() -> list:
    params = [pytest.param(case, id=case.id) for case in _BUNDLES]
    params += [
        pytest.param(None, id=run.name, marks=pytest.mark.skip(reason=run.problem))
        for run in _RUNS
        if run.problem
    ]
    if not params:
        reason = "no bundle: the package ships none and GAMELAB_BENCH_RUNS names no run"
        params.append(pytest.param(None, id="no-bundle", marks=pytest.mark.skip(reason=reason)))
    return params


def _baseline_params(encoder: str | None = None) -> list:
    """What the TensorFlow baselines rebuild: one per encoder of a shipped bundle, with
    untrained decoders, and one per run folder, with its trained weights (only ``encoder``'s
    when given)."""
    params = []
    for case in _BUNDLES:
        if (case.run is None or case.precision == "fp32") and encoder in (None, case.encoder):
            params.append(pytest.param(case, id=f"{case.source}-{case.encoder}"))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Bundles, thread settings and batch sizes come from the environment: parametrised here."""
    names = metafunc.fixturenames
    if "bundle" in names:
        metafunc.parametrize("bundle", _bundle_params())
    if "tf_bundle" in names:
        metafunc.parametrize("tf_bundle", _baseline_params())
    if "goal_baseline" in names:  # the goals' TF pipeline: the original design's encoder
        metafunc.parametrize("goal_baseline", _baseline_params(_load_report().BASELINE_ENCODER))
    if "beam" in names:
        metafunc.parametrize("beam", BEAM_SIZES, ids=[f"beam{k}" for k in BEAM_SIZES])
    if "batch" in names:
        sizes = sorted({1, *_SETTINGS.batches})
        metafunc.parametrize("batch", sizes, ids=[f"batch{b}" for b in sizes])
    if "threads" in names:
        metafunc.parametrize(
            "threads",
            _SETTINGS.thread_settings,
            ids=[f"threads-{threads_label(t)}" for t in _SETTINGS.thread_settings],
        )


@pytest.fixture(scope="session")
def settings() -> Settings:
    return _SETTINGS


@dataclass(frozen=True)
class ImageSet:
    """The benchmark's images: ids, files and reference captions, in file-name order."""

    ids: tuple[str, ...]
    paths: tuple[Path, ...]
    references: dict


@pytest.fixture(scope="session")
def images(settings: Settings) -> ImageSet:
    from gamelab_export.data import load_dataset

    if not settings.data.exists():
        pytest.skip(f"Flickr8k not found at {settings.data}: set GAMELAB_BENCH_DATA")
    examples, _ = load_dataset(settings.data, "test")
    examples = examples[: settings.images]
    if not examples:
        pytest.skip(f"{settings.data}: the test split has no images on disk")
    return ImageSet(
        ids=tuple(e.image_id for e in examples),
        paths=tuple(e.path for e in examples),
        references={e.image_id: list(e.captions) for e in examples},
    )


class Workload:
    """The images cut into batches, handed out one batch per timed round, round-robin.

    A batch-1 benchmark thus times every image once per pass; captions are kept (last one
    wins) so the benchmark can report the BLEU-4 of what it produced.
    """

    def __init__(self, images: ImageSet, batch: int):
        self.images = images
        self.batch = batch
        self.chunks = [
            (images.ids[i : i + batch], images.paths[i : i + batch])
            for i in range(0, len(images.ids), batch)
        ]
        self.rounds = max(MIN_ROUNDS, len(self.chunks))
        self._next = itertools.cycle(self.chunks)
        self.captions: dict[str, str] = {}

    def setup(self):
        """pytest-benchmark's ``setup``: the arguments of the next round."""
        return (next(self._next),), {}

    def record(self, ids, captions) -> None:
        self.captions.update(zip(ids, captions, strict=True))


@pytest.fixture()
def workload(images: ImageSet):
    return lambda batch: Workload(images, batch)


def bleu4(references: dict, captions: dict) -> float | None:
    """Corpus BLEU-4 (x100) of ``captions`` on the SDK's tokenisation; None without pycocoevalcap.

    Cheap (no Java, unlike ``gamelab_export.metrics``): a subset check, not the paper metric.
    """
    try:
        from pycocoevalcap.bleu.bleu import Bleu
    except ImportError:
        return None
    import contextlib
    import io

    from gamelab_caption.vocabulary import tokenize

    ids = sorted(captions)
    if not ids:
        return None
    gts = {i: [" ".join(tokenize(r)) for r in references[i]] for i in ids}
    res = {i: [" ".join(tokenize(captions[i])) or "<empty>"] for i in ids}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its counts
        scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return round(100.0 * scores[3], 2)


@pytest.fixture(scope="session")
def score_bleu4(images: ImageSet):
    return lambda captions: bleu4(images.references, captions)


@pytest.fixture(scope="session")
def bleu4_of():
    return bleu4


@pytest.fixture(scope="session")
def captioners():
    """Captioner per (bundle folder, providers, threads), created once: sessions load slowly.

    ``threads`` None is ``Captioner()`` as users call it (ONNX Runtime chooses).
    """
    from gamelab_caption import Captioner

    cache = {}

    def get(
        path: Path,
        providers: tuple[str, ...] | None = ("CPUExecutionProvider",),
        threads: int | None = None,
    ):
        key = (str(path), providers, threads)
        if key not in cache:
            cache[key] = Captioner(path, providers=providers, threads=threads)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def cuda():
    """The CUDA provider list, or a skip saying why there is none."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if CUDA not in available:
        pytest.skip(
            f"no {CUDA} in onnxruntime {ort.__version__} (has {', '.join(available)}): "
            "install onnxruntime-gpu on a machine with an NVIDIA GPU"
        )
    return (CUDA, "CPUExecutionProvider")


def describe(benchmark, group: str, **info) -> None:
    """Name the benchmark's group and record what report.py reads from ``extra_info``
    (``threads`` as a label: a count, or "default" for the runtime's own choice)."""
    if "threads" in info:
        info["threads"] = threads_label(info["threads"])
    benchmark.group = group
    benchmark.extra_info.update(info)


@pytest.fixture(scope="session")
def record():
    return describe


def _load_report():
    spec = importlib.util.spec_from_file_location(
        "gamelab_bench_report", REPO / "benchmarks" / "report.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _JsonFile:
    """pytest-benchmark's --benchmark-json target, opened only when the JSON is written,
    so that a collect-only, disabled or crashed run leaves the last results alone."""

    def __init__(self, path: Path):
        self.name = str(path)

    def __enter__(self):
        Path(self.name).parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.name, "wb")  # noqa: SIM115
        return self._file

    def __exit__(self, *exc_info) -> None:
        self._file.close()

    def __str__(self) -> str:
        return self.name


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Always keep pytest-benchmark's JSON: report.py is made from it."""
    if getattr(config.option, "benchmark_json", "absent") is None:
        config.option.benchmark_json = _JsonFile(_SETTINGS.output / "benchmark.json")


def _evaluations() -> dict:
    """Whole-test-split metrics by run name: each run's eval/metrics.json rows, and for the
    shipped bundles ("shipped") their manifests' rows, measured when they were made."""
    evals = {}
    for case in _BUNDLES:
        if case.run is None:
            manifest = json.loads((case.path / "manifest.json").read_text())
            rows = [{**row, "bundle": case.bundle_name} for row in manifest.get("metrics", [])]
            evals.setdefault("shipped", []).extend(rows)
    for run in _RUNS:
        path = run.path / "eval" / "metrics.json"
        if path.is_file():
            evals[run.name] = json.loads(path.read_text())
    return evals


def pytest_benchmark_update_json(config, benchmarks, output_json) -> None:
    """Add the settings and the runs' evaluations, then write the summary, table and chart."""
    if not output_json.get("benchmarks"):
        return
    settings = dataclasses.asdict(_SETTINGS)
    settings.update(
        thread_settings=[threads_label(t) for t in _SETTINGS.thread_settings],
        bundles=[case.id for case in _BUNDLES],
        runs=[str(path) for path in _SETTINGS.runs],
        data=str(_SETTINGS.data),
        output=str(_SETTINGS.output),
    )
    output_json["gamelab"] = {
        "settings": settings,
        "eval": _evaluations(),
        "load_average": {
            "start": _LOAD_AT_START,
            "end": os.getloadavg(),
            "cpus": os.cpu_count(),
            "others_cpu_share": cpu_share.others_share(
                _CPU_AT_START, cpu_share.now(), os.cpu_count()
            ),
        },
    }
    _WRITTEN.extend(_load_report().write_report(output_json, _SETTINGS.output))


def pytest_terminal_summary(terminalreporter) -> None:
    if _WRITTEN:
        terminalreporter.write_sep("-", "benchmark report")
        for path in _WRITTEN:
            terminalreporter.write_line(str(path))
