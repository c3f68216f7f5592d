"""One place that turns exceptions into JSON ``{"detail": ...}`` responses.

Every :class:`~actsearch.errors.ActsearchError` carries its own ``status_code``
(404 not found, 409 conflict, 413/415/422 bad input, ...), so the mapping is the
class hierarchy itself. Request validation stays 422 but its detail becomes one
readable sentence (with the structured errors beside it). Pydantic errors raised
while building a spec inside a route are user input too, never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from actsearch.errors import ActsearchError

log = logging.getLogger("actsearch.api")


def _where(loc: Iterable[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "form", "cookie"):
        # "query limit", "body trials": say where it came from, then the field.
        head, rest = parts[0], parts[1:]
        return f"{head} {'.'.join(rest)}" if rest else head
    return ".".join(parts) or "request"


def readable_errors(errors: Iterable[Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """One sentence for people and a JSON-safe list (loc, msg, type) for programs."""
    items = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
         "type": str(e.get("type", ""))}
        for e in errors
    ]
    sentence = "; ".join(f"{_where(i['loc'])}: {i['msg']}" for i in items) or "invalid request"
    return sentence, items


async def actsearch_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """An ActsearchError -> its status with ``{"detail": message}``."""
    assert isinstance(exc, ActsearchError)
    if exc.status_code >= 500:
        log.error("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path,
                  exc.detail)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


async def request_validation_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 with a readable ``detail`` sentence and the structured ``errors``."""
    assert isinstance(exc, RequestValidationError | ValidationError)
    sentence, items = readable_errors(exc.errors())
    return JSONResponse({"detail": sentence, "errors": items}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(ActsearchError, actsearch_error_handler)
    app.add_exception_handler(RequestValidationError, request_validation_handler)
    app.add_exception_handler(ValidationError, request_validation_handler)
