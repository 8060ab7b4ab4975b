"""The HTTP API and upload page: ``create_app`` builds a FastAPI app around one Captioner.

Every request runs its inference on a bounded ``InferencePool`` so the event loop stays free
and a burst is refused with 503 instead of queueing without end. Errors carry a message for
a person and never a stack trace. Every asset of the page and of /docs is served from
``static/``; the Content-Security-Policy header forbids loading anything from elsewhere.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from ..captioner import Captioner, CaptionResult
from ..errors import ImageError, ImageTooLarge
from ..version import __version__
from .inference import Analysis, analyse
from .pool import InferencePool, PoolFull, available_cores
from .schemas import CaptionResponse, ErrorResponse, Health, SearchResponse
from .uploads import FORM_FIELD, BufferBudget, booking, read_image

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20
DEFAULT_QUEUE_SIZE = 32  # per worker pool; at ~20-100 ms a request this is ~1 s of waiting
BUFFERED_UPLOADS = 4  # default budget of bodies held at once, in largest uploads (40 MiB)
MAX_BEAM_SIZE = 10
MAX_K = 50
RETRY_AFTER_S = 1
MAX_COVERS = 10_000  # cover paths remembered from recent hits, oldest forgotten first
STATIC = Path(str(resources.files(__package__) / "static"))
# Catalogue fields sent to clients: an allowlist, since catalogues hold file paths and
# whatever else a scraper wrote (paths, hashes, play counts) under names nobody can foresee.
PUBLIC_METADATA = frozenset(
    {"description", "genre", "developer", "publisher", "releasedate", "players", "rating",
     "region", "lang", "family", "year"}
)  # fmt: skip
# What /v1/covers serves: files whose first bytes say they are one of these formats.
_COVER_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_ERRORS = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        404: "no game index is loaded (search only)",
        413: "upload or image dimensions over the limit",
        415: "not an image",
        503: "inference queue full; retry after Retry-After seconds",
    }.items()
}
_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {FORM_FIELD: {"type": "string", "format": "binary"}},
                    "required": [FORM_FIELD],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


class _SecurityHeaders:
    """ASGI middleware adding ``_SECURITY_HEADERS`` to every HTTP response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _image_type(path: str) -> str | None:
    """The content type of an image file, or None for anything else.

    Paths come from the game index, and an index file is input: a crafted one may name
    /etc/passwd as a cover. Only a regular file that Pillow recognises, from its header, as
    one of _COVER_TYPES is served, with that type.
    """
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        return None
    try:
        with Image.open(path) as image:  # reads the header only
            return _COVER_TYPES.get(image.format)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


def _finite(score: float) -> float | None:
    return round(score, 4) if math.isfinite(score) else None  # JSON has no -Infinity


def _attention(result: CaptionResult, grid: tuple[int, int]) -> dict:
    weights = result.attention  # (steps, grid_h, grid_w)
    words = list(result.tokens) + ["<end>"]
    return {
        "grid": list(grid),
        "words": words[: len(weights)],
        "steps": np.round(weights, 4).tolist(),
        "mean": np.round(weights.mean(axis=0), 4).tolist(),  # (grid_h, grid_w)
    }


def _busy(why: str) -> HTTPException:
    return HTTPException(
        503,
        f"The server is busy: {why}, retry shortly",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


class _Service:
    """The state behind the routes: the models, the pool, the limits, the cover paths."""

    def __init__(self, captioner, index, pool, max_upload_bytes, buffers):
        self.captioner = captioner
        self.index = index
        self.pool = pool
        self.max_upload_bytes = max_upload_bytes
        self.buffers = buffers
        self.covers: OrderedDict[str, str] = OrderedDict()  # game_id -> catalogue image

    async def analyse(self, request: Request, *, search: bool, **options) -> dict:
        start = time.perf_counter()
        # A slot and the bytes of the body are booked before a byte of it is read: a full
        # server refuses at once instead of buffering uploads it will refuse anyway, and the
        # bodies held in memory (read, queued or decoding) never pass the budget together.
        try:
            reservation = self.pool.reserve()
        except PoolFull:
            raise _busy("every inference slot is taken") from None
        with reservation:
            size = booking(request, self.max_upload_bytes)
            if not self.buffers.book(size):
                raise _busy("too many uploads are in memory")
            try:  # the bytes stay booked until the worker is done with them
                data = await read_image(request, self.max_upload_bytes)
                queued = time.perf_counter()
                index = self.index if search else None
                work = functools.partial(analyse, self.captioner, data, index=index, **options)
                analysis: Analysis = await reservation.run(work)
            except ImageTooLarge as error:
                raise HTTPException(413, str(error)) from None
            except ImageError as error:
                raise HTTPException(415, str(error)) from None
            finally:
                self.buffers.free(size)
        done = time.perf_counter()
        timings = {"queue": round((done - queued) * 1000 - sum(analysis.timings_ms.values()), 2)}
        timings.update(analysis.timings_ms)
        timings["total"] = round((done - start) * 1000, 2)
        result = analysis.result
        body: dict[str, Any] = {
            "caption": result.text,
            "score": _finite(result.score),
            "alternatives": [
                {"caption": text, "score": _finite(score)} for text, score in result.alternatives
            ],
            "model": self.captioner.name,
            "timings_ms": timings,
        }
        if result.attention is not None:
            body["attention"] = _attention(result, self.captioner.bundle.grid)
        if analysis.hits is not None:
            body["games"] = [self._game(hit) for hit in analysis.hits]
        return body

    def _game(self, hit) -> dict:
        cover_url = None
        if hit.image and _image_type(hit.image) is not None:
            self.covers[hit.game_id] = str(hit.image)
            self.covers.move_to_end(hit.game_id)
            while len(self.covers) > MAX_COVERS:
                self.covers.popitem(last=False)
            cover_url = f"/v1/covers?game_id={quote(hit.game_id, safe='')}"
        metadata = {k: v for k, v in (hit.metadata or {}).items() if k in PUBLIC_METADATA}
        return {
            "game_id": hit.game_id,
            "name": hit.name,
            "score": round(float(hit.score), 4),
            "platform": hit.platform,
            "cover_url": cover_url,
            "reason": hit.reason,
            "evidence": [
                {
                    "source": item.source,
                    "score": round(float(item.score), 4),
                    "kind": item.kind,
                    "read": item.read,
                    "matched": item.matched,
                }
                for item in hit.evidence
            ],
            "metadata": metadata,
        }


def create_app(
    captioner: Captioner | None = None,
    index: Any = None,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    workers: int | None = None,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    max_buffered_bytes: int | None = None,
) -> FastAPI:
    """Build the app: the API under /v1, /healthz, /docs, and the upload page at /.

    Args:
        captioner: the model; default ``Captioner()`` (the bundled model, one thread per call).
        index: a loaded ``GameIndex`` for /v1/search; None answers search with 404.
        max_upload_bytes: larger uploads get 413.
        workers: inference threads; default the cores this process may use.
        queue_size: requests waiting beyond those running; more get 503.
        max_buffered_bytes: bytes all request bodies being received may hold together;
            more get 503. Default BUFFERED_UPLOADS uploads of the largest size.

    Raises:
        ValueError: a limit is out of range.
    """
    if max_upload_bytes < 1:
        raise ValueError(f"max_upload_bytes must be >= 1, got {max_upload_bytes}")
    if captioner is None:
        captioner = Captioner(threads=1)
    pool = InferencePool(workers or available_cores(), queue_size)
    buffers = BufferBudget(max_buffered_bytes or BUFFERED_UPLOADS * max_upload_bytes)
    service = _Service(captioner, index, pool, max_upload_bytes, buffers)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        pool.shutdown()

    app = FastAPI(
        title="gamelab-caption",
        version=__version__,
        description="Caption an image and find the game it shows.",
        docs_url=None,  # FastAPI's page loads Swagger UI from a CDN; ours is in static/
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(_SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, error: Exception) -> JSONResponse:
        logger.error("Unhandled error: %r", error, exc_info=error)
        return JSONResponse({"detail": "Internal server error"}, status_code=500)

    beam_query = Query(3, ge=1, le=MAX_BEAM_SIZE, description="beams kept; 1 is greedy")
    attention_query = Query(False, description="add the attention weights to the answer")
    animals_query = Query(
        True,
        description="name the animal the encoder's ImageNet head sees in place of the "
        "caption's ('a cat' for what the decoder calls a dog); false: the decoder's words",
    )

    @app.post(
        "/v1/caption",
        response_model=CaptionResponse,
        responses=_ERRORS,
        response_model_exclude_unset=True,  # no "attention": null unless asked for
        openapi_extra=_IMAGE_BODY,
    )
    async def caption(
        request: Request,
        beam_size: int = beam_query,
        return_attention: bool = attention_query,
        name_animals: bool = animals_query,
    ) -> dict:
        """Caption one image, sent as form field `image` or as the raw body."""
        return await service.analyse(
            request,
            search=False,
            beam_size=beam_size,
            return_attention=return_attention,
            name_animals=name_animals,
        )

    @app.post(
        "/v1/search",
        response_model=SearchResponse,
        responses=_ERRORS,
        response_model_exclude_unset=True,  # no "attention": null unless asked for
        openapi_extra=_IMAGE_BODY,
    )
    async def search(
        request: Request,
        k: int = Query(5, ge=1, le=MAX_K, description="games to return"),
        beam_size: int = beam_query,
        return_attention: bool = attention_query,
        name_animals: bool = animals_query,
    ) -> dict:
        """Caption one image and find the games it looks like, best first."""
        if service.index is None:
            raise HTTPException(
                404, "No game index is loaded: start the server with --index games.idx"
            )
        return await service.analyse(
            request,
            search=True,
            k=k,
            beam_size=beam_size,
            return_attention=return_attention,
            name_animals=name_animals,
        )

    @app.get("/v1/covers", response_class=FileResponse, responses={404: _ERRORS[404]})
    async def cover(game_id: str = Query(..., max_length=512)) -> FileResponse:
        """The catalogue image of a game returned by a search (only those)."""
        path = service.covers.get(game_id)
        media_type = _image_type(path) if path is not None else None
        if media_type is None:
            raise HTTPException(404, f"No cover for game {game_id!r} among recent results")
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "max-age=3600"})

    @app.get("/healthz", response_model=Health)
    async def healthz() -> dict:
        """Liveness, the model, and how full the inference queue is."""
        return {
            "status": "ok",
            "model": captioner.name,
            "games_indexed": service.index is not None,
            "workers": pool.workers,
            "capacity": pool.capacity,
            "in_flight": pool.in_use,
            "max_upload_bytes": max_upload_bytes,
            "max_pixels": captioner.max_pixels,
        }

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html")

    return app
