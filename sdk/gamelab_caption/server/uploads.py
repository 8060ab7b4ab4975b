"""Read the uploaded image out of a request, never holding more than the size limit.

The limit is enforced while the body streams in (a declared ``Content-Length`` is refused up
front, a chunked body as soon as it passes the limit), so a huge upload costs the server at
most ``max_bytes`` plus a little, not the upload's size. Decoding happens later, in a worker.
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


async def read_image(request: Request, max_bytes: int) -> bytes:
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
        data = await (_form_image(limited) if is_form else limited.body())
    except UploadTooLarge:
        raise _too_large(max_bytes) from None
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    if not data:
        raise HTTPException(422, f"No image in the request: {USAGE}")
    return data
