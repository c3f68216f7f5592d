"""One error hierarchy for the whole product.

Every error a user can cause is an :class:`ActsearchError` with a message that
says what is wrong and how to fix it. The CLI prints it on one line; the API maps
each class to an HTTP status (``status_code``). This module imports only the standard library so
that ``models/`` (torch and numpy only) may raise these too.
"""

from __future__ import annotations

import re


class ActsearchError(Exception):
    """Base class: a problem the user can fix, with a readable message."""

    status_code: int = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(ActsearchError):
    """A request, spec or option that is malformed or out of range."""

    status_code = 422


class InvalidDataset(ActsearchError):
    """A dataset file or array that cannot be used for training."""

    status_code = 422


class UnsupportedMediaType(InvalidDataset):
    """A file that is not what its extension or content type claims."""

    status_code = 415


class PayloadTooLarge(InvalidDataset):
    """An upload or body above the configured size limit."""

    status_code = 413


class UnknownActivation(InvalidInput):
    """An activation family name that is not in the registry."""


class NotFound(ActsearchError):
    """A dataset, search, trial or schedule that does not exist (or is not yours)."""

    status_code = 404


class Conflict(ActsearchError):
    """An action that the object's current state does not allow."""

    status_code = 409


class LimitExceeded(ActsearchError):
    """A per-owner limit (queued and running searches) that this request would pass.

    ``retry_after_s``, when set, is sent as ``Retry-After``: the limit frees up by itself.
    """

    status_code = 429

    def __init__(self, detail: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class ServiceBusy(ActsearchError):
    """The service could not do the work now (a helper process died); retrying may work."""

    status_code = 503


class Unreachable(ServiceBusy):
    """The database or the broker stayed unreachable for a worker's whole retry budget
    (``ACTSEARCH_WORKER__TRANSIENT_RETRY_BUDGET_S``); the message says which and how long."""


_TRACEBACK = "Traceback (most recent call last):"
_SOURCE_PATH = re.compile(r"(?:[A-Za-z]:)?[/\\](?:[\w.@+~-]+[/\\])+([\w.@+~-]+\.(?:pyc?|so|cpp|cu|h|c))\b")


def public_message(text: str | None) -> str | None:
    """An error as users may see it: the message, never a traceback or a server file path.

    Tracebacks name the server's files and code, which tells an outsider how the
    service is laid out; operators find them in the process's log instead. A
    message that is only a traceback keeps its last line (the exception itself).
    """
    if text is None:
        return None
    head, sep, tail = text.partition(_TRACEBACK)
    if sep and not head.strip():
        lines = [ln for ln in tail.splitlines() if ln.strip() and not ln.startswith(" ")]
        head = lines[-1] if lines else "internal error"
    kept = [ln for ln in head.splitlines() if not ln.lstrip().startswith('File "')]
    return _SOURCE_PATH.sub(r"\1", "\n".join(kept).strip())
