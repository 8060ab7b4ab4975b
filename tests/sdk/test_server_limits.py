"""The server under hostile load and untrusted index files: refuse before reading, bounded
memory, covers that are images, metadata from an allowlist."""

from __future__ import annotations

import http.client
import io
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the server needs the 'serve' extra")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

from gamelab_caption import Captioner  # noqa: E402
from gamelab_caption.catalog import CatalogEntry  # noqa: E402
from gamelab_caption.cli.serve import build_parser  # noqa: E402
from gamelab_caption.search import GameIndex  # noqa: E402
from gamelab_caption.server.app import create_app  # noqa: E402


def _png(rgb=(255, 0, 0), size=(16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_full_server_refuses_before_reading_the_body(captioner):
    app = create_app(captioner, workers=1, queue_size=0)
    sent = []

    def body():  # records every chunk the server pulls
        for chunk in (b"\x89PNG", bytes(1000)):
            sent.append(chunk)
            yield chunk

    with TestClient(app) as client:
        slot = app.state.service.pool.reserve()  # the only slot
        try:
            refused = client.post(
                "/v1/caption", content=body(), headers={"content-type": "image/png"}
            )
        finally:
            slot.release()
        served = client.post("/v1/caption", content=_png(), headers={"content-type": "image/png"})
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert sent == [], "the body of a refused request was read"
    assert served.status_code == 200


def test_uploads_in_memory_are_bounded_by_the_buffer_budget(captioner):
    app = create_app(captioner, workers=1, max_upload_bytes=10_000, max_buffered_bytes=15_000)
    with TestClient(app) as client:
        budget = app.state.service.buffers
        budget.book(10_000)  # another upload of 10 kB is being received
        try:
            refused = client.post(
                "/v1/caption", content=_png(), headers={"content-type": "image/png"}
            )
            chunked = client.post(  # no Content-Length: books the whole limit
                "/v1/caption", content=iter([_png()]), headers={"content-type": "image/png"}
            )
        finally:
            budget.free(10_000)
        served = client.post(
            "/v1/caption", content=iter([_png()]), headers={"content-type": "image/png"}
        )
    assert refused.status_code == 200  # a 100-byte PNG fits beside the 10 kB one
    assert chunked.status_code == 503 and "in memory" in chunked.json()["detail"]
    assert served.status_code == 200
    assert budget.booked == 0, "every booking is freed"


def test_serve_takes_max_pixels_and_refuses_larger_images(tiny_bundle):
    args = build_parser(32, 10 * 2**20).parse_args(["--max-pixels", "100"])
    assert args.max_pixels == 100
    small = Captioner(tiny_bundle, max_pixels=100)
    with TestClient(create_app(small, workers=1)) as client:
        refused = client.post(
            "/v1/caption", content=_png(size=(11, 10)), headers={"content-type": "image/png"}
        )
        fits = client.post(
            "/v1/caption", content=_png(size=(10, 10)), headers={"content-type": "image/png"}
        )
        health = client.get("/healthz").json()
    assert refused.status_code == 413 and "100" in refused.json()["detail"]
    assert fits.status_code == 200 and health["max_pixels"] == 100


def test_covers_are_served_only_when_the_file_is_an_image(captioner, tmp_path):
    cover = tmp_path / "cover.png"
    Image.new("RGB", (32, 32), (0, 0, 255)).save(cover)
    entry = CatalogEntry(
        "blue",
        "Blue Game",
        (str(cover),),
        metadata={"genre": "Action", "path": "/secret", "crc32": "ab"},
    )
    index = GameIndex.build([entry], captioner=captioner, progress=False, read_text=False)
    with TestClient(create_app(captioner, index, workers=1)) as client:
        hit = client.post(
            "/v1/search", content=cover.read_bytes(), headers={"content-type": "image/png"}
        )
        game = hit.json()["games"][0]
        image = client.get(game["cover_url"])
        cover.write_text("root:x:0:0:root:/root:/bin/bash\n")  # what a crafted index could name
        again = client.post(
            "/v1/search", content=_png((0, 0, 255)), headers={"content-type": "image/png"}
        )
        leaked = client.get(game["cover_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert game["metadata"] == {"genre": "Action"}, "only allowlisted metadata reaches clients"
    assert again.json()["games"][0]["cover_url"] is None
    assert leaked.status_code == 404 and "root:" not in leaked.text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for peak RSS")
def test_many_large_uploads_at_once_keep_peak_memory_flat(tiny_bundle):
    """32 clients send 8 MiB bodies slowly at once over loopback: without a budget the server
    would hold 256 MiB of bodies; with the default (4 uploads) it holds at most 32 MiB."""
    port, clients, body_mb = _free_port(), 32, 8
    server = subprocess.Popen(
        [sys.executable, "-m", "gamelab_caption.cli", "serve", "--model", str(tiny_bundle),
         "--port", str(port), "--workers", "1", "--queue-size", "64", "--max-upload-mb", "8"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(300):  # up to 30 s to start
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        # One refused upload first: what the first request loads once (Pillow's format
        # plugins, allocator arenas) is not what this test measures.
        warm_up = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        warm_up.request("POST", "/v1/caption", os.urandom(2**20), {"Content-Type": "image/png"})
        assert warm_up.getresponse().status == 415
        warm_up.close()
        before = _peak_rss_mb(server.pid)
        statuses = []

        def send() -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                connection.putrequest("POST", "/v1/caption")
                connection.putheader("Content-Type", "image/png")
                connection.putheader("Content-Length", str(body_mb * 2**20))
                connection.endheaders()
                for _ in range(body_mb):  # slowly: every body is in flight at once
                    connection.send(os.urandom(2**20))
                    time.sleep(0.05)
                statuses.append(connection.getresponse().status)
            except OSError:  # refused early: the server answered and closed mid-body
                statuses.append("closed")
            finally:
                connection.close()

        threads = [threading.Thread(target=send) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        growth = _peak_rss_mb(server.pid) - before
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert len(statuses) == clients
    assert 415 in statuses, "some bodies were read to the end (random bytes: not an image)"
    # Measured here: 50-60 MiB with the budget (32 MiB of bodies, one decoder copy, the
    # allocator's slack), 310 MiB without it (a budget of 32 uploads).
    assert growth < 32 + 64, f"peak RSS grew by {growth:.0f} MiB"


def test_a_search_request_decodes_the_upload_once(captioner, game_index, monkeypatch):
    import gamelab_caption.preprocessing as preprocessing

    opened = []
    real_open = preprocessing._open

    def counting_open(source):  # the one place load_image decodes bytes or files
        opened.append(type(source).__name__)
        return real_open(source)

    monkeypatch.setattr(preprocessing, "_open", counting_open)
    with TestClient(create_app(captioner, game_index, workers=1)) as client:
        found = client.post("/v1/search", content=_png(), headers={"content-type": "image/png"})
    assert found.status_code == 200 and found.json()["games"]
    assert opened == ["bytearray"], "caption, search and OCR share the one decoded image"


def test_a_decoded_image_is_passed_on_without_a_copy():
    from gamelab_caption.preprocessing import load_image

    image = Image.new("RGB", (640, 480), (1, 2, 3))
    assert load_image(image) is image  # a 50 MP upload would cost 150 MB per copy
