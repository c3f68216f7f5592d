"""Streaming multipart uploads with the size limit enforced while the body is read.

Starlette's own ``request.form()`` reads the whole body before a route sees it, so
a 20 GB upload would fill the disk before any check ran. Here the declared
``Content-Length`` is checked first, then every chunk is counted as it arrives
and the request is refused with 413 the moment the limit is passed. The file
part goes to a ``SpooledTemporaryFile`` (memory up to 1 MiB, then disk).
"""

from __future__ import annotations

import unicodedata
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from core.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

#: Room for the form fields and part headers on top of the file itself.
FORM_OVERHEAD_BYTES = 64 * 1024
#: Longest file name accepted (what most file systems allow).
MAX_FILENAME_CHARS = 255


@dataclass
class Upload:
    """The parsed form: the file's bytes and name, and the text fields."""

    filename: str
    data: bytes
    fields: dict[str, str]


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the upload is larger than this service's limit of {limit} bytes "
        f"({limit / 2**20:.1f} MiB); send a smaller file or raise ACTSEARCH_LIMITS__MAX_UPLOAD_BYTES"
    )


def check_filename(filename: str) -> str:
    """The uploaded file's name, if it is a plain name; else InvalidInput saying why.

    The name only picks the parser (by extension) and the default dataset name, and is
    never used as a path; still, a client that sends a path, control characters or
    bidirectional overrides (``"invoice\u202efdp.csv"`` displays as ``invoicevsc.pdf``)
    is refused with a reason rather than having its name silently rewritten.
    """
    if len(filename) > MAX_FILENAME_CHARS:
        raise InvalidInput(
            f"the upload's filename is {len(filename)} characters; use a name of at most "
            f"{MAX_FILENAME_CHARS}"
        )
    bad = sorted({f"U+{ord(c):04X}" for c in filename
                  if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")})
    if bad:
        raise InvalidInput(
            f"the upload's filename {filename[:80]!r} contains control characters or invisible "
            f"formatting characters ({', '.join(bad[:5])}); rename the file"
        )
    if "/" in filename or "\\" in filename or filename.strip(". ") == "":
        raise InvalidInput(
            f"the upload's filename {filename[:80]!r} must be a plain file name such as "
            "data.csv, not a path; send the file itself (curl -F file=@path/to/data.csv)"
        )
    return filename


async def _limited(request: Request, cap: int, limit: int) -> AsyncGenerator[bytes, None]:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > cap:
            raise _too_large(limit)
        yield chunk


async def read_upload(request: Request, *, max_bytes: int, file_field: str = "file") -> Upload:
    """Parse a ``multipart/form-data`` body holding one file, within ``max_bytes``.

    Raises PayloadTooLarge (413) past the limit, UnsupportedMediaType (415) for a
    body that is not multipart, InvalidInput (422) for a malformed form or a
    missing file part.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UnsupportedMediaType(
            f"POST /datasets takes multipart/form-data (a 'file' part plus name, label, task "
            f"fields), not {content_type or 'a body without Content-Type'}; for a built-in use "
            "POST /datasets/builtin"
        )
    cap = max_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise _too_large(max_bytes)
    parser = MultiPartParser(request.headers, _limited(request, cap, max_bytes), max_files=1,
                             max_fields=16, max_part_size=FORM_OVERHEAD_BYTES)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if "maximum size" in exc.message:
            raise PayloadTooLarge(
                f"a form field is too large: {exc.message} Fields (name, label, task) are "
                "short text; the data goes in the 'file' part"
            ) from None
        raise InvalidInput(f"malformed multipart form: {exc.message}") from None
    files: list[UploadFile] = []
    fields: dict[str, str] = {}
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.append(value)
            else:
                fields[key] = value
        upload = next((f for f in files if f is form.get(file_field)), None)
        if upload is None:
            raise InvalidInput(
                f"the form has no file part named {file_field!r}; send the data as "
                f"-F {file_field}=@data.csv"
            )
        filename = check_filename(upload.filename or "upload")
        if upload.size is not None and upload.size > max_bytes:
            raise _too_large(max_bytes)
        data = await upload.read()
        if len(data) > max_bytes:
            raise _too_large(max_bytes)
        return Upload(filename=filename, data=data, fields=fields)
    finally:
        for f in files:
            await f.close()
