"""One place that turns exceptions into JSON ``{"detail": ...}`` responses.

Every :class:`~core.errors.ActsearchError` carries its own ``status_code``
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
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from optuna.exceptions import StorageInternalError
from pydantic import ValidationError
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from api.limits import retry_after_header
from core.errors import ActsearchError

log = logging.getLogger("actsearch.api")

#: Longest ``detail`` sent back: a message quoting a 10 kB name keeps both ends.
MAX_DETAIL_CHARS = 1000


def shorten(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """``text`` with its middle cut out past ``limit`` characters (what and how-to-fix survive)."""
    if len(text) <= limit:
        return text
    keep = (limit - 40) // 2
    return f"{text[:keep]} ...[{len(text) - 2 * keep} characters cut]... {text[-keep:]}"


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
    retry = getattr(exc, "retry_after_s", None)
    headers = {"Retry-After": retry_after_header(retry)} if retry is not None else None
    return JSONResponse({"detail": shorten(exc.detail)}, status_code=exc.status_code,
                        headers=headers)


async def request_validation_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 with a readable ``detail`` sentence and the structured ``errors``."""
    assert isinstance(exc, RequestValidationError | ValidationError)
    sentence, items = readable_errors(exc.errors())
    return JSONResponse({"detail": shorten(sentence), "errors": items}, status_code=422)


async def out_of_range_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 for a number the database cannot hold (an id of 2**70), instead of a 500.

    SQLite raises OverflowError while binding such a parameter, PostgreSQL a DataError
    ("integer out of range"); either way the request carried the number.
    """
    log.info("out-of-range value on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "a number in the request is out of range: ids, versions and counts must "
                   f"be integers below 2**63 ({str(exc).splitlines()[0][:200]})"},
        status_code=422)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """FastAPI's HTTPException handling, except a body FastAPI could not parse: 422 with why.

    Malformed JSON is already a 422 ("JSON decode error"); a body that is not UTF-8 or
    nests too deeply raised FastAPI's bare 400 "There was an error parsing the body".
    Both are the same mistake, so they get the same status and a reason.
    """
    assert isinstance(exc, HTTPException)
    cause = exc.__cause__
    if exc.status_code == 400 and cause is not None and request.method in ("POST", "PUT", "PATCH"):
        if isinstance(cause, UnicodeDecodeError):
            why = (f"the body is not UTF-8 (byte {cause.object[cause.start:cause.start + 1]!r} "
                   f"at position {cause.start}); send JSON encoded as UTF-8")
        elif isinstance(cause, RecursionError):
            why = ("the JSON body nests arrays or objects too deeply to parse; send a flat JSON "
                   "object as the API's schema shows (see /docs)")
        else:
            why = f"the body could not be parsed as JSON ({type(cause).__name__}); see /docs"
        return JSONResponse({"detail": why}, status_code=422)
    return await http_exception_handler(request, exc)


async def database_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    """503 (with Retry-After) while the database is unreachable, e.g. restarting.

    The engine's pre-ping replaces dead pooled connections, so the next request
    after the database is back succeeds; until then clients get a retryable answer
    that says what is wrong, not a bare 500.
    """
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path,
                str(exc).splitlines()[0][:300])
    return JSONResponse(
        {"detail": "the database is unavailable (restarting or unreachable); retry in a few "
                   "seconds"}, status_code=503, headers={"Retry-After": "5"})


async def optuna_storage_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Optuna wraps a failed commit in StorageInternalError: 503 when a database error
    (busy or unreachable) is the cause, as for our own sessions; 500 otherwise."""
    if isinstance(exc.__cause__, OperationalError | InterfaceError):
        return await database_unavailable_handler(request, exc.__cause__)
    log.error("Optuna storage error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error in the study storage"}, status_code=500)


#: What :func:`request_validation_handler` sends, replacing FastAPI's default 422 schema
#: (``detail`` as a list) in the published OpenAPI document, so clients and schema-driven
#: tests see the shape they actually get.
VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "title": "HTTPValidationError",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "title": "Detail",
                   "description": "one readable sentence: where, and what is wrong"},
        "errors": {
            "type": "array", "title": "Errors",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}


_TOO_LARGE = {
    "description": "request body above the service's limit (api.body_limit)",
    "content": {"application/json": {"schema": {
        "type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}},
    }}},
}


def _error(description: str) -> dict[str, Any]:
    return {**_TOO_LARGE, "description": description}


def _declare_common_errors(schema: dict[str, Any]) -> None:
    """Declare the statuses that code outside the routes can answer with, where it applies.

    Any operation with a body can get 413 (the body-size middleware); any operation
    behind the API-key scheme can get 401 (no or a bad key, when auth is on) and 429
    (the per-owner rate limit). Statuses a route declares itself are left as they are.
    """
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                responses.setdefault("413", _TOO_LARGE)
            if operation.get("security", schema.get("security")):
                responses.setdefault("401", _error("no API key, or an unknown or revoked one "
                                                   "(when ACTSEARCH_AUTH__ENABLED)"))
                responses.setdefault("429", _error("over the per-owner rate or concurrency "
                                                   "limit; see Retry-After"))


def _install_error_schema(app: FastAPI) -> None:
    """Publish the real 422 body: patch the generated OpenAPI document once, on first use."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas["HTTPValidationError"] = VALIDATION_ERROR_SCHEMA
            schemas.pop("ValidationError", None)
            _declare_common_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app`` (and publish their 422 shape in its OpenAPI)."""
    _install_error_schema(app)
    app.add_exception_handler(OperationalError, database_unavailable_handler)
    app.add_exception_handler(InterfaceError, database_unavailable_handler)
    app.add_exception_handler(StorageInternalError, optuna_storage_error_handler)
    app.add_exception_handler(ActsearchError, actsearch_error_handler)
    app.add_exception_handler(OverflowError, out_of_range_handler)
    app.add_exception_handler(DataError, out_of_range_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, request_validation_handler)
    app.add_exception_handler(ValidationError, request_validation_handler)
