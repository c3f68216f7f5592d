"""A size limit on request bodies, checked before and while a body is read (413).

FastAPI reads a JSON body whole into memory before validating it, so without a
cap one request could make the API allocate gigabytes. This pure ASGI middleware
refuses a declared ``Content-Length`` above the limit at once, and counts the
bytes of bodies sent without one (chunked), stopping at the limit. Uploads
(``POST /datasets``) are exempt: :mod:`api.uploads` streams them under their own,
larger limit (``max_upload_bytes``).
"""

from __future__ import annotations

import json
from collections.abc import Collection

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: (method, path) pairs with a limit of their own.
DEFAULT_EXEMPT: frozenset[tuple[str, str]] = frozenset({("POST", "/datasets")})


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` past the limit; FastAPI re-raises HTTPExceptions as they are."""


def _message(limit: int, size: int | None) -> str:
    got = f"is {size} bytes, above" if size is not None else "is larger than"
    return (
        f"the request body {got} this service's limit of {limit} bytes "
        f"({limit / 2**20:.1f} MiB) for JSON bodies; send a smaller body (upload data files "
        "with POST /datasets) or raise ACTSEARCH_LIMITS__MAX_BODY_BYTES"
    )


class BodyLimitMiddleware:
    """Refuse HTTP request bodies above ``max_bytes`` with 413 and a JSON ``detail``."""

    def __init__(self, app: ASGIApp, *, max_bytes: int,
                 exempt: Collection[tuple[str, str]] = DEFAULT_EXEMPT) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = {(m.upper(), p.rstrip("/") or "/") for m, p in exempt}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            scope["method"], scope["path"].rstrip("/") or "/"
        ) in self.exempt:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_413(send, _message(self.max_bytes, int(declared)))
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(413, _message(self.max_bytes, None))
            return message

        await self.app(scope, counted, send)


async def _send_413(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
