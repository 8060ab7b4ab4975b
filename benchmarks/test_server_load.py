"""Load on ``gamelab-caption serve`` over loopback: requests/s, latency and errors.

The server runs as its own process (``python -m gamelab_caption.cli serve``, the way users
start it) on 127.0.0.1; client threads in this process post real images to /v1/caption over
keep-alive connections for a bounded time, then the server is stopped. Every request must
succeed: one error (a 5xx, a 503 from a full queue, a dropped connection) fails the test.

Settings (environment variables):
    GAMELAB_BENCH_MODEL: bundle folder or bundled name (default: the SDK's default model).
    GAMELAB_BENCH_SECONDS: how long the load runs (default 30).
    GAMELAB_BENCH_CLIENTS: concurrent clients, one connection each (default 8).
    GAMELAB_BENCH_DATA_GAMES: folder of game covers posted (default ../shared/data/games;
        examples/images/ when absent).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # load goes to loopback only
MAX_IMAGES = 32  # distinct images posted, round-robin
MAX_REQUESTS = 100_000  # a hard stop on top of the time bound
START_TIMEOUT_S = 120
REQUEST_TIMEOUT_S = 60


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise pytest.UsageError(f"{name}={raw!r} must be a positive integer")
    return int(raw)


def _model() -> str:
    from gamelab_caption.bundle import DEFAULT_MODEL, bundled_models

    model = os.environ.get("GAMELAB_BENCH_MODEL")
    if model:
        path = Path(model).expanduser()
        return str(path if path.is_absolute() or not (REPO / path).exists() else REPO / path)
    if DEFAULT_MODEL not in bundled_models():
        pytest.skip(f"the default model {DEFAULT_MODEL} is not bundled: set GAMELAB_BENCH_MODEL")
    return DEFAULT_MODEL


def _image_files() -> list[Path]:
    games = Path(os.environ.get("GAMELAB_BENCH_DATA_GAMES", REPO.parent / "shared/data/games"))
    files = sorted(games.glob("*/downloaded_images/*.jpg"))[:MAX_IMAGES]
    files = files or sorted((REPO / "examples" / "images").glob("*.jpg"))
    if not files:
        pytest.skip(f"no images to post: none in {games} nor in examples/images")
    return files


def _multipart(path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"'
        "\r\nContent-Type: image/jpeg\r\n\r\n"
    ).encode()
    body = head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@dataclass
class LoadResult:
    """Latencies of the successful requests and what went wrong with the others."""

    seconds: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, latency: float | None, error: str | None) -> None:
        with self.lock:
            if error is None:
                self.latencies_s.append(latency)
            else:
                self.errors[error] = self.errors.get(error, 0) + 1

    def summary(self) -> dict:
        latencies_ms = np.asarray(self.latencies_s) * 1000
        count = len(latencies_ms)
        return {
            "requests": count + sum(self.errors.values()),
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "requests_per_s": round(count / self.seconds, 2) if self.seconds else 0.0,
            "p50_ms": round(float(np.percentile(latencies_ms, 50)), 1) if count else None,
            "p99_ms": round(float(np.percentile(latencies_ms, 99)), 1) if count else None,
            "max_ms": round(float(latencies_ms.max()), 1) if count else None,
        }


def _client(port: int, bodies, deadline: float, budget: threading.Semaphore, result: LoadResult):
    connection = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
    turn = 0
    while time.monotonic() < deadline and budget.acquire(blocking=False):
        body, content_type = bodies[turn % len(bodies)]
        turn += 1
        start = time.perf_counter()
        try:
            connection.request(
                "POST", "/v1/caption", body=body, headers={"Content-Type": content_type}
            )
            response = connection.getresponse()
            response.read()
            error = None if response.status == 200 else f"HTTP {response.status}"
        except (OSError, http.client.HTTPException) as exc:
            error = type(exc).__name__
            connection.close()  # reconnects on the next request
        result.add(time.perf_counter() - start, error)
    connection.close()


def _run_load(port: int, bodies, clients: int, seconds: int) -> LoadResult:
    result = LoadResult()
    budget = threading.Semaphore(MAX_REQUESTS)
    start = time.monotonic()
    deadline = start + seconds
    threads = [
        threading.Thread(target=_client, args=(port, bodies, deadline, budget, result))
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + REQUEST_TIMEOUT_S)
    result.seconds = time.monotonic() - start
    return result


@pytest.fixture(scope="module")
def server_port(tmp_path_factory):
    """``gamelab-caption serve`` in a child process on a free loopback port."""
    port = _free_port()
    command = [sys.executable, "-m", "gamelab_caption.cli", "serve", "--model", _model()]
    command += ["--host", HOST, "--port", str(port)]
    log = tmp_path_factory.mktemp("server") / "server.log"  # a file: a pipe would fill up
    with open(log, "wb") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited: {log.read_text()[-2000:]}")
            try:
                connection = http.client.HTTPConnection(HOST, port, timeout=5)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer /healthz in {START_TIMEOUT_S} s")
            time.sleep(0.2)
        yield port
    finally:
        process.send_signal(signal.SIGINT)  # uvicorn shuts down gracefully on SIGINT
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_server_load_over_loopback(benchmark, server_port):
    clients = _env_int("GAMELAB_BENCH_CLIENTS", 8)
    seconds = _env_int("GAMELAB_BENCH_SECONDS", 30)
    bodies = [_multipart(path) for path in _image_files()]
    warm = _run_load(server_port, bodies, clients, 1)  # sessions and connections warm up
    assert not warm.errors, f"errors while warming up: {warm.errors}"

    result = benchmark.pedantic(
        _run_load, args=(server_port, bodies, clients, seconds), rounds=1, iterations=1
    )
    summary = result.summary()
    benchmark.group = "server load"
    benchmark.extra_info.update(kind="server_load", clients=clients, seconds=seconds, **summary)
    print(
        f"\n{clients} clients, {result.seconds:.1f} s: {summary['requests']} requests, "
        f"{summary['requests_per_s']} req/s, p50 {summary['p50_ms']} ms, "
        f"p99 {summary['p99_ms']} ms, max {summary['max_ms']} ms, errors {summary['errors']}"
    )
    assert summary["errors"] == 0, f"failed requests: {summary['error_kinds']}"
    assert summary["requests"] > 0
