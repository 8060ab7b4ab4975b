"""Read the uploaded image out of a request, never holding more than the size limit.

The limit is enforced while the body streams in (a declared ``Content-Length`` is refused up
front, a chunked body as soon as it passes the limit), so a huge upload costs the server at
most ``max_bytes`` plus a little, not the upload's size. Decoding happens later, in a worker.

Across requests, ``BufferBudget`` bounds the bytes all bodies in memory hold together: a
request books what it may receive (its declared length, else the limit) before reading a
byte and keeps it until its inference is done, and is refused with 503 when the budget
cannot cover it; otherwise many clients sending large bodies at once would each hold up to
the limit.
"""

from __future__ import annotations

import python_multipart  # noqa: F401  (Starlette's form parser: fail at import, not later)
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message

FORM_FIELD = "image"
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and part headers around the image
_FORM_TYPES = ("multipart/form-data",)
_REFUSED_TYPES = ("application/x-www-form-urlencoded", "application/json", "text/")
USAGE = (
    f"send the image as a multipart/form-data field named '{FORM_FIELD}', "
    "or as the raw request body"
)


class UploadTooLarge(Exception):
    """The body passed the limit while streaming in."""


class BufferBudget:
    """Bytes that request bodies may hold in memory at once, booked before reading.

    Used from the event loop only (one thread), so plain counters are enough.

    Args:
        total: the budget in bytes (>= the largest single booking, or nothing is ever read).
    """

    def __init__(self, total: int):
        if total < 1:
            raise ValueError(f"the upload buffer budget must be >= 1 byte, got {total}")
        self.total = total
        self.booked = 0

    def book(self, size: int) -> bool:
        """Book ``size`` bytes; False (nothing booked) when the budget cannot cover them."""
        if self.booked + size > self.total:
            return False
        self.booked += size
        return True

    def free(self, size: int) -> None:
        self.booked -= size


def booking(request: Request, max_bytes: int) -> int:
    """The bytes to book for a request's body: its declared length, else the most accepted."""
    content_type = request.headers.get("content-type", "").lower()
    limit = max_bytes + (FORM_OVERHEAD if content_type.startswith(_FORM_TYPES) else 0)
    declared = request.headers.get("content-length", "")
    return min(int(declared), limit) if declared.isdigit() else limit


def _too_large(max_bytes: int) -> HTTPException:
    return HTTPException(413, f"The upload is larger than the limit of {max_bytes:,} bytes")


def _limited(request: Request, limit: int) -> Request:
    """The same request, reading its body through a byte counter that stops at ``limit``."""
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise UploadTooLarge
        return message

    return Request(request.scope, receive)


async def _form_image(request: Request) -> bytes:
    form = await request.form(max_files=1, max_fields=16)
    try:
        field = form.get(FORM_FIELD)
        if field is None:
            raise HTTPException(422, f"The form has no '{FORM_FIELD}' field: {USAGE}")
        if not isinstance(field, UploadFile):
            raise HTTPException(422, f"The '{FORM_FIELD}' field must be a file, not text")
        return await field.read()
    finally:
        await form.close()


async def _raw_body(request: Request) -> bytearray:
    # Appended in place: Starlette's ``body()`` joins a list of chunks, which holds every
    # body twice at the end, and the buffer budget counts each body once.
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
    return body


async def read_image(request: Request, max_bytes: int) -> bytes | bytearray:
    """The image bytes of an upload, from a multipart form or the raw body.

    Args:
        request: the incoming request; its body is consumed.
        max_bytes: largest image accepted.

    Raises:
        HTTPException: 413 over the limit, 415 a form or text body that cannot hold an
            image, 422 no image in the request, 400 a malformed multipart body.
    """
    content_type = request.headers.get("content-type", "").lower()
    is_form = content_type.startswith(_FORM_TYPES)
    if content_type.startswith(_REFUSED_TYPES):
        raise HTTPException(415, f"Content type '{content_type}' cannot carry an image: {USAGE}")
    limit = max_bytes + (FORM_OVERHEAD if is_form else 0)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(max_bytes)
    limited = _limited(request, limit)
    try:
        data = await (_form_image(limited) if is_form else _raw_body(limited))
    except UploadTooLarge:
        raise _too_large(max_bytes) from None
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    if not data:
        raise HTTPException(422, f"No image in the request: {USAGE}")
    return data
