"""One error hierarchy for the whole product.

Every error a user can cause is an :class:`ActsearchError` with a message that
says what is wrong and how to fix it. The CLI prints it on one line; the API maps
each class to an HTTP status (``status_code``). This module imports nothing so
that ``models/`` (torch and numpy only) may raise these too.
"""

from __future__ import annotations


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
    """A per-owner limit (queued and running searches) that this request would pass."""

    status_code = 429


class TrainingFailed(ActsearchError):
    """A candidate's training raised or diverged; stored as the trial's error."""

    status_code = 500
