"""The HTTP API in-process (FastAPI's TestClient) on the tiny bundle: every status it answers."""

from __future__ import annotations

import io
import struct
import sys
import threading
import zlib
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the server needs the 'serve' extra")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

from gamelab_caption.cli import main  # noqa: E402
from gamelab_caption.server.app import create_app  # noqa: E402

COLOURS = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 255, 0)}
INSTALL_HINT = "pip install 'gamelab-caption-sdk[serve]'"


def _png(rgb: tuple[int, int, int], size: tuple[int, int] = (16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height``: a bomb that costs nothing to make."""
    data = bytearray(_png((0, 0, 0), (1, 1)))
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))  # type + 13 bytes of IHDR data
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def _form(data: bytes, field: str = "image") -> dict:
    return {"files": {field: ("upload.png", data, "image/png")}}


@pytest.fixture(scope="module")
def client(captioner):
    with TestClient(create_app(captioner, workers=1)) as client:
        yield client


@pytest.fixture(scope="module")
def search_client(captioner, game_index):
    with TestClient(create_app(captioner, game_index, workers=1)) as client:
        yield client


def test_caption_of_a_form_upload_has_the_documented_keys(client):
    response = client.post("/v1/caption", **_form(_png(COLOURS["red"])))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"caption", "score", "alternatives", "model", "timings_ms"}
    assert body["caption"] == "red ball"
    assert body["model"] == "tiny"
    assert isinstance(body["score"], float)
    assert {"queue", "decode", "caption", "total"} <= set(body["timings_ms"])


def test_caption_of_a_raw_body_upload(client):
    response = client.post(
        "/v1/caption", content=_png(COLOURS["blue"]), headers={"content-type": "image/png"}
    )
    assert response.status_code == 200
    assert response.json()["caption"] == "blue box"


def test_a_large_jpeg_is_captioned_exactly_as_the_sdk_captions_its_bytes(large_jpeg):
    # Both decode a large JPEG at the same reduced scale (test_preprocessing checks the
    # scale): the same pixels, so the same caption and beam score.
    from gamelab_caption import Captioner

    shipped = Captioner()
    data = large_jpeg
    with TestClient(create_app(shipped, workers=1)) as client:
        headers = {"content-type": "image/jpeg"}
        body = client.post("/v1/caption", content=data, headers=headers).json()
    expected = shipped.caption(data)
    assert (body["caption"], body["score"]) == (expected.text, round(expected.score, 4))


def test_the_shipped_default_names_the_cat_unless_asked_not_to():
    from gamelab_caption import Captioner

    cat = (Path(__file__).parents[2] / "examples" / "images" / "cat.jpg").read_bytes()
    headers = {"content-type": "image/jpeg"}
    with TestClient(create_app(Captioner(), workers=1)) as client:
        named = client.post("/v1/caption", content=cat, headers=headers).json()
        decoded = client.post("/v1/caption?name_animals=false", content=cat, headers=headers)
    assert " cat " in named["caption"] and " dog " in decoded.json()["caption"]


def test_beam_size_reaches_the_decoder(client):
    green = _png(COLOURS["green"])
    greedy = client.post("/v1/caption?beam_size=1", **_form(green)).json()
    beam = client.post("/v1/caption?beam_size=3", **_form(green)).json()
    assert (greedy["caption"], beam["caption"]) == ("green box", "a ball")
    assert beam["alternatives"][0]["caption"] == "green box"


def test_attention_is_returned_per_word_and_as_a_mean(client):
    body = client.post("/v1/caption?return_attention=true", **_form(_png(COLOURS["red"]))).json()
    attention = body["attention"]
    assert attention["grid"] == [2, 2]
    assert attention["words"] == ["red", "ball", "<end>"]
    assert len(attention["steps"]) == 3
    assert all(sum(map(sum, step)) == pytest.approx(1, abs=1e-3) for step in attention["steps"])
    assert len(attention["mean"]) == 2 and len(attention["mean"][0]) == 2


@pytest.mark.parametrize(
    "query", ["beam_size=0", "beam_size=11", "beam_size=three", "return_attention=maybe"]
)
def test_invalid_parameters_are_422(client, query):
    response = client.post(f"/v1/caption?{query}", **_form(_png(COLOURS["red"])))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "query"


@pytest.mark.parametrize("query", ["k=0", "k=51", "k=five"])
def test_invalid_k_is_422_even_without_an_index(client, query):
    response = client.post(f"/v1/search?{query}", **_form(_png(COLOURS["red"])))
    assert response.status_code == 422


def test_missing_image_is_422_with_a_message(client):
    wrong_field = client.post("/v1/caption", **_form(_png(COLOURS["red"]), field="file"))
    empty = client.post("/v1/caption", content=b"", headers={"content-type": "image/png"})
    for response in (wrong_field, empty):
        assert response.status_code == 422
        assert "image" in response.json()["detail"]


def test_text_field_instead_of_a_file_is_422(client):
    response = client.post("/v1/caption", data={"image": "not a file"}, files={"x": b"1"})
    assert response.status_code == 422
    assert "must be a file" in response.json()["detail"]


@pytest.mark.parametrize(
    ("data", "content_type"),
    [(b"hello, world", "application/octet-stream"), (b"%PDF-1.4\n", "application/pdf")],
)
def test_non_images_are_415_with_a_message(client, data, content_type):
    response = client.post("/v1/caption", content=data, headers={"content-type": content_type})
    assert response.status_code == 415
    assert "not an image" in response.json()["detail"]


def test_text_and_json_bodies_are_415(client):
    response = client.post("/v1/caption", json={"image": "red.png"})
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]


def test_truncated_image_is_415(client, image_files):
    response = client.post("/v1/caption", **_form(image_files["corrupt"].read_bytes()))
    assert response.status_code == 415
    assert "corrupt or truncated" in response.json()["detail"]


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [(8_000, 8_000, "more than the limit"), (100_000, 100_000, "too large")],
)
def test_decompression_bombs_are_413_before_decoding(client, width, height, message):
    response = client.post("/v1/caption", **_form(_png_claiming(width, height)))
    assert response.status_code == 413
    assert message in response.json()["detail"]


def test_upload_over_the_size_limit_is_413(captioner):
    with TestClient(create_app(captioner, workers=1, max_upload_bytes=1_000)) as small:
        big = bytes(2_000)
        declared = small.post("/v1/caption", content=big, headers={"content-type": "image/png"})
        form = small.post("/v1/caption", **_form(big))
        chunked = small.post(  # no Content-Length: the limit holds while streaming
            "/v1/caption",
            content=iter([big[:900], big[900:]]),
            headers={"content-type": "image/png"},
        )
        fits = small.post("/v1/caption", **_form(_png(COLOURS["red"])))
    for response in (declared, form, chunked):
        assert response.status_code == 413
        assert "1,000 bytes" in response.json()["detail"]
    assert fits.status_code == 200


def test_full_queue_is_503_with_retry_after(captioner):
    app = create_app(captioner, workers=1, queue_size=0)
    gate = threading.Event()
    with TestClient(app) as busy_client:
        blocker = app.state.service.pool.submit(gate.wait)  # holds the only slot
        try:
            refused = busy_client.post("/v1/caption", **_form(_png(COLOURS["red"])))
        finally:
            gate.set()
        blocker.result(timeout=10)
        served = busy_client.post("/v1/caption", **_form(_png(COLOURS["red"])))
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "busy" in refused.json()["detail"]
    assert served.status_code == 200


def test_unexpected_errors_are_500_without_a_stack_trace(captioner):
    class Broken:
        name, bundle, max_pixels = captioner.name, captioner.bundle, captioner.max_pixels

        def caption(self, *args, **kwargs):
            raise RuntimeError("secret internal detail")

    app = create_app(Broken(), workers=1)
    with TestClient(app, raise_server_exceptions=False) as broken_client:
        response = broken_client.post("/v1/caption", **_form(_png(COLOURS["red"])))
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error"}
    assert "Traceback" not in response.text and "secret" not in response.text


def test_search_without_an_index_is_404_with_a_hint(client):
    response = client.post("/v1/search", **_form(_png(COLOURS["red"])))
    assert response.status_code == 404
    assert "--index" in response.json()["detail"]


def test_search_returns_the_caption_and_the_best_games(search_client):
    response = search_client.post("/v1/search?k=2", **_form(_png(COLOURS["red"])))
    assert response.status_code == 200
    body = response.json()
    assert body["caption"] == "red ball"
    assert [game["game_id"] for game in body["games"]][0] == "red-game"
    assert len(body["games"]) == 2
    best = body["games"][0]
    assert (best["name"], best["platform"]) == ("Red Game", "snes")
    assert 0 < best["score"] <= 1  # a confidence (rounded to 4 places)
    image = best["evidence"][0]
    assert (image["source"], image["kind"]) == ("image", "cover") and image["score"] > 0.99
    assert best["reason"].startswith("looks like its cover")
    assert "search" in body["timings_ms"]


def test_search_says_which_text_matched(tmp_path):
    """A title screen in the catalogue; the upload another screen of that title: the text
    read (OCR) and the name it matched come back as evidence, for the page to show."""
    pytest.importorskip("rapidocr", reason="reading text needs the ocr extra")
    from PIL import ImageDraw, ImageFont

    from gamelab_caption import Captioner
    from gamelab_caption.catalog import CatalogEntry
    from gamelab_caption.media import MediaImage
    from gamelab_caption.search import GameIndex

    screen = Image.new("RGB", (320, 224), (10, 10, 40))
    ImageDraw.Draw(screen).text(
        (30, 80), "GOLVELLIUS", fill="white", font=ImageFont.load_default(40)
    )
    path = tmp_path / "title.png"
    screen.save(path)
    entries = [
        CatalogEntry("golvellius", "Golvellius (USA)", (MediaImage(str(path), "title_screen"),)),
        CatalogEntry("other", "Other Game", (str(tmp_path / "title.png"),)),
    ]
    shipped = Captioner()  # the tiny test model finds every image alike, and so sure of it
    index = GameIndex.build(entries, captioner=shipped, progress=False, read_text=True)
    upload = Image.new("RGB", (320, 224), (120, 20, 20))  # another screen of the same title
    ImageDraw.Draw(upload).text(
        (60, 120), "GOLVELLIUS", fill="yellow", font=ImageFont.load_default(36)
    )
    data = io.BytesIO()
    upload.save(data, format="PNG")
    with TestClient(create_app(shipped, index, workers=1)) as client:
        games = client.post("/v1/search", **_form(data.getvalue())).json()["games"]
    text = [item for item in games[0]["evidence"] if item["source"] == "text"]
    assert games[0]["game_id"] == "golvellius"
    assert text and "golvellius" in text[0]["read"] and text[0]["kind"] in ("name", "title_screen")


def test_covers_are_served_by_hit_id_only(search_client, game_index):
    games = search_client.post("/v1/search", **_form(_png(COLOURS["blue"]))).json()["games"]
    cover = search_client.get(games[0]["cover_url"])
    assert cover.status_code == 200
    assert Image.open(io.BytesIO(cover.content)).getpixel((0, 0)) == COLOURS["blue"]
    for game_id in ("no-such-game", "../../../../etc/passwd", "/etc/passwd"):
        assert search_client.get("/v1/covers", params={"game_id": game_id}).status_code == 404


def test_healthz_reports_the_model_and_the_queue(client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["model"] == "tiny"
    assert body["games_indexed"] is False
    assert (body["workers"], body["in_flight"]) == (1, 0)


def test_page_and_docs_load_only_their_own_assets(client):
    for path in ("/", "/docs", "/static/app.js", "/static/docs.js", "/static/style.css"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "http://" not in response.text and "https://" not in response.text, path
        assert "default-src 'self'" in response.headers["content-security-policy"]
    spec = client.get("/openapi.json").json()
    assert {"/v1/caption", "/v1/search", "/healthz"} <= set(spec["paths"])
    assert client.get("/redoc").status_code == 404  # FastAPI's would load a CDN script


@pytest.mark.parametrize(
    "path",
    ["/static/..%2fapp.py", "/static/%2e%2e/app.py", "/static/..%2f..%2fcli.py", "/static/%2fetc"],
)
def test_static_files_cannot_escape_their_folder(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert "create_app" not in response.text


def test_serve_without_fastapi_prints_the_install_hint(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # makes `import uvicorn` fail
    assert main(["serve"]) == 2
    assert INSTALL_HINT in capsys.readouterr().err


def test_serve_runs_uvicorn_on_loopback_by_default(monkeypatch, tiny_bundle):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append((app, options)))
    assert main(["serve", "--model", str(tiny_bundle), "--port", "8123", "--workers", "2"]) == 0
    ((app, options),) = calls
    assert (options["host"], options["port"]) == ("127.0.0.1", 8123)
    assert app.state.service.pool.workers == 2


def test_serve_loads_a_saved_index_and_refuses_a_missing_one(
    monkeypatch, tiny_bundle, game_index, tmp_path, capsys
):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(app))
    saved = game_index.save(tmp_path / "games.idx")
    assert main(["serve", "--model", str(tiny_bundle), "--index", str(saved)]) == 0
    assert len(calls[0].state.service.index) == 3
    missing = tmp_path / "none.idx"
    assert main(["serve", "--model", str(tiny_bundle), "--index", str(missing)]) == 2
    assert "Index file not found" in capsys.readouterr().err
