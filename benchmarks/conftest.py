"""Shared fixtures of the benchmark suite: which runs, which images, how many threads.

Every pipeline compared here reads the same Flickr8k test images, the same trained weights
(one ``gamelab-export`` run folder each) and runs on the same number of threads, so their
ratios mean something. Settings are environment variables, listed in benchmarks/README.md.

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
# helper modules beside the benchmarks (bench_photos, recognition_data): importable by name
sys.path.insert(0, str(Path(__file__).resolve().parent))
DEFAULT_RUNS = ("runs/inception_v3", "runs/efficientnet_lite0")  # those that exist are used
DEFAULT_DATA = "../shared/data/flickr8k"
MIN_ROUNDS = 3  # timed rounds per benchmark, at least
BEAM_SIZES = (1, 3)
PRECISIONS = ("fp32", "int8")
CUDA = "CUDAExecutionProvider"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise pytest.UsageError(f"{name}={raw!r} must be an integer") from None
    if value < 1:
        raise pytest.UsageError(f"{name} must be >= 1, got {value}")
    return value


def _repo_path(raw: str) -> Path:
    path = Path(raw).expanduser()
    return path if path.is_absolute() else REPO / path


@dataclass(frozen=True)
class Settings:
    """What every benchmark shares (environment variables in brackets).

    Attributes:
        runs: run folders to compare (GAMELAB_BENCH_RUNS, comma-separated, or GAMELAB_BENCH_RUN).
        data: Flickr8k folder whose test split is read (GAMELAB_BENCH_DATA).
        images: test images used, the first N by file name (GAMELAB_BENCH_IMAGES).
        batch: the throughput batch size (GAMELAB_BENCH_BATCH).
        threads: TF intra/inter-op threads and ORT intra-op threads (GAMELAB_BENCH_THREADS).
        starts: fresh processes timed per bundle (GAMELAB_BENCH_STARTS).
        output: folder for the JSON, markdown and PNG (GAMELAB_BENCH_OUTPUT).
        default_bundle: bundle name of the SDK's default model (GAMELAB_BENCH_DEFAULT).
    """

    runs: tuple[Path, ...]
    data: Path
    images: int
    batch: int
    threads: int
    starts: int
    output: Path
    default_bundle: str


def load_settings() -> Settings:
    raw_runs = os.environ.get("GAMELAB_BENCH_RUNS") or os.environ.get("GAMELAB_BENCH_RUN")
    if raw_runs:
        runs = tuple(_repo_path(r.strip()) for r in raw_runs.split(",") if r.strip())
    else:
        runs = tuple(p for p in map(_repo_path, DEFAULT_RUNS) if (p / "bundles").is_dir())
    return Settings(
        runs=runs,
        data=_repo_path(os.environ.get("GAMELAB_BENCH_DATA", DEFAULT_DATA)),
        images=_env_int("GAMELAB_BENCH_IMAGES", 16),
        batch=_env_int("GAMELAB_BENCH_BATCH", 8),
        threads=_env_int("GAMELAB_BENCH_THREADS", 2),
        starts=_env_int("GAMELAB_BENCH_STARTS", 3),
        output=_repo_path(os.environ.get("GAMELAB_BENCH_OUTPUT", "benchmarks/results")),
        default_bundle=os.environ.get("GAMELAB_BENCH_DEFAULT", "efficientnet-lite0"),
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
    """One bundle of a run: FP32 or INT8."""

    run: RunCase
    precision: str

    @property
    def path(self) -> Path:
        return self.run.bundles[self.precision]

    @property
    def bundle_name(self) -> str:
        return self.path.name.removesuffix("-fp32")

    @property
    def id(self) -> str:
        return f"{self.run.name}-{self.precision}"

    @property
    def fields(self) -> dict[str, str]:
        """What every SDK benchmark record says about the bundle it measured."""
        return {
            "pipeline": "sdk",
            "run": self.run.name,
            "encoder": self.run.config.encoder,
            "bundle": self.bundle_name,
            "precision": self.precision,
        }


def load_run(path: Path) -> RunCase:
    from gamelab_export.config import TrainConfig
    from gamelab_export.pipeline import bundle_dirs

    if not (path / "config.json").is_file():
        return RunCase(path, problem=f"{path} has no config.json: not a gamelab-export run")
    values = json.loads((path / "config.json").read_text())
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in values.items() if k in known})
    config = dataclasses.replace(config, output=str(path))
    bundles = {p: d for p, d in bundle_dirs(config).items() if (d / "manifest.json").is_file()}
    problem = None if bundles else f"{path}/bundles holds no bundle: run `gamelab-export bundle`"
    return RunCase(path, config, bundles, problem)


_SETTINGS = load_settings()
_RUNS = [load_run(path) for path in _SETTINGS.runs]
_WRITTEN: list[Path] = []  # report files, listed at the end of the run
_LOAD_AT_START = os.getloadavg()  # other work on the machine skews every number
_NO_RUNS = (
    "no run folder to benchmark: set GAMELAB_BENCH_RUNS=runs/<name>[,runs/<other>] "
    f"(defaults tried: {', '.join(DEFAULT_RUNS)})"
)


def _run_params() -> list:
    if not _RUNS:
        return [pytest.param(None, id="no-run", marks=pytest.mark.skip(reason=_NO_RUNS))]
    return [
        pytest.param(run, id=run.name, marks=[pytest.mark.skip(reason=run.problem)])
        if run.problem
        else pytest.param(run, id=run.name)
        for run in _RUNS
    ]


def _bundle_params() -> list:
    params = []
    for param in _run_params():
        run = param.values[0]
        if run is None or run.problem:
            params.append(param)
            continue
        for precision in PRECISIONS:
            case = BundleCase(run, precision)
            if precision in run.bundles:
                params.append(pytest.param(case, id=case.id))
            else:
                reason = f"{run.path} has no {precision} bundle"
                params.append(pytest.param(None, id=case.id, marks=pytest.mark.skip(reason=reason)))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Runs and bundles come from the environment, so they are parametrised here."""
    names = metafunc.fixturenames
    if "bench_run" in names:
        metafunc.parametrize("bench_run", _run_params())
    if "bundle" in names:
        metafunc.parametrize("bundle", _bundle_params())
    if "beam" in names:
        metafunc.parametrize("beam", BEAM_SIZES, ids=[f"beam{k}" for k in BEAM_SIZES])
    if "batch" in names:
        sizes = sorted({1, _SETTINGS.batch})
        metafunc.parametrize("batch", sizes, ids=[f"batch{b}" for b in sizes])


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
def captioners(settings: Settings):
    """Captioner per (bundle folder, providers), created once: ORT sessions load slowly."""
    from gamelab_caption import Captioner

    cache = {}

    def get(path: Path, providers: tuple[str, ...] | None = ("CPUExecutionProvider",)):
        key = (str(path), providers)
        if key not in cache:
            cache[key] = Captioner(path, providers=providers, threads=settings.threads)
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
    """Name the benchmark's group and record what report.py reads from ``extra_info``."""
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
    """Each run's eval/metrics.json rows (BLEU-4 on the whole test split), by run name."""
    evals = {}
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
        runs=[str(path) for path in _SETTINGS.runs],
        data=str(_SETTINGS.data),
        output=str(_SETTINGS.output),
    )
    output_json["gamelab"] = {
        "settings": settings,
        "eval": _evaluations(),
        "load_average": {"start": _LOAD_AT_START, "end": os.getloadavg(), "cpus": os.cpu_count()},
    }
    _WRITTEN.extend(_load_report().write_report(output_json, _SETTINGS.output))


def pytest_terminal_summary(terminalreporter) -> None:
    if _WRITTEN:
        terminalreporter.write_sep("-", "benchmark report")
        for path in _WRITTEN:
            terminalreporter.write_line(str(path))
