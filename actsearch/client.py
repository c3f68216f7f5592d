"""A small Python client for the actsearch HTTP API (what ``actsearch --server URL`` uses).

Errors from the service come back as the same :mod:`core.errors` classes the
embedded mode raises, carrying the service's ``detail``, so callers handle one
hierarchy whichever mode they talk to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from core.errors import (
    ActsearchError,
    Conflict,
    InvalidDataset,
    InvalidInput,
    LimitExceeded,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)

FINISHED = ("complete", "failed", "cancelled")


class ServiceUnavailable(ActsearchError):
    """The service could not be reached or answered with a server error."""

    status_code = 503


class AuthenticationFailed(ActsearchError):
    """No API key, or one the service does not know (or has revoked)."""

    status_code = 401


class PermissionDenied(ActsearchError):
    """An admin-only action with a key that is not an admin's."""

    status_code = 403


_BY_STATUS: dict[int, type[ActsearchError]] = {
    400: InvalidInput, 401: AuthenticationFailed, 403: PermissionDenied, 404: NotFound,
    409: Conflict, 413: PayloadTooLarge, 415: UnsupportedMediaType, 422: InvalidInput,
    429: LimitExceeded,
}


class ActsearchClient:
    """Talks to one actsearch service."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"cannot reach {self.base_url}: {exc}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            cls = _BY_STATUS.get(response.status_code, ServiceUnavailable)
            if response.status_code == 401 and not getattr(self, "api_key", None):
                detail = f"{detail}; pass --api-key KEY or set ACTSEARCH_API_KEY"
            raise cls(f"{detail} (HTTP {response.status_code})")
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    # ----- resources ----------------------------------------------------------------------
    def upload_dataset(self, path: Path, *, name: str | None = None, label: str | None = None,
                       task: str | None = None) -> dict[str, Any]:
        """Upload a CSV/Parquet/NPZ file as a named, versioned dataset."""
        form = {k: v for k, v in {"name": name or path.stem, "label": label, "task": task}.items()
                if v is not None}
        try:
            with path.open("rb") as fh:
                return self._call("POST", "/datasets", data=form, files={"file": (path.name, fh)})
        except OSError as exc:
            raise InvalidDataset(f"cannot read {path}: {exc.strerror}") from None

    def create_search(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/searches", json=spec)

    def search(self, search_id: int) -> dict[str, Any]:
        return self._call("GET", f"/searches/{search_id}")

    def leaderboard(self, search_id: int) -> dict[str, Any]:
        return self._call("GET", f"/searches/{search_id}/leaderboard")

    def cancel(self, search_id: int) -> dict[str, Any]:
        return self._call("POST", f"/searches/{search_id}/cancel")

    def trial(self, trial_id: int) -> dict[str, Any]:
        return self._call("GET", f"/trials/{trial_id}")

    def trial_activations(self, trial_id: int) -> dict[str, Any]:
        return self._call("GET", f"/trials/{trial_id}/activations")

    def export(self, search_id: int, *, activations: str = "learned") -> bytes:
        """The best model's zip (learned or distilled activations)."""
        return self._call("GET", f"/searches/{search_id}/export",
                          params={"activations": activations})

    def wait(self, search_id: int, on_progress: Callable[[dict[str, Any]], None] | None = None,
             poll_s: float = 1.0, timeout_s: float | None = None) -> dict[str, Any]:
        """Poll a search until it finishes; returns its final detail."""
        started = time.monotonic()
        while True:
            detail = self.search(search_id)
            if on_progress is not None:
                on_progress(detail)
            if detail["state"] in FINISHED:
                return detail
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                raise ServiceUnavailable(f"search {search_id} still {detail['state']} after "
                                         f"{timeout_s:.0f} s")
            time.sleep(poll_s)

    # ----- schedules ----------------------------------------------------------------------
    def create_schedule(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /schedules``; ``None`` values are left out (the service's defaults apply)."""
        return self._call("POST", "/schedules",
                          json={k: v for k, v in body.items() if v is not None})

    def schedules(self, *, state: str | None = None, limit: int = 500,
                  offset: int = 0) -> dict[str, Any]:
        """``GET /schedules``: ``{data, count}``."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if state is not None:
            params["state"] = state
        return self._call("GET", "/schedules", params=params)

    def schedule(self, schedule_id: int) -> dict[str, Any]:
        """``GET /schedules/{id}`` with its runs."""
        return self._call("GET", f"/schedules/{schedule_id}")

    def schedule_action(self, schedule_id: int, action: str) -> dict[str, Any]:
        """``POST /schedules/{id}/pause`` or ``.../resume``."""
        return self._call("POST", f"/schedules/{schedule_id}/{action}")

    def delete_schedule(self, schedule_id: int) -> None:
        """``DELETE /schedules/{id}`` (its searches stay)."""
        self._call("DELETE", f"/schedules/{schedule_id}")

    # ----- auth ---------------------------------------------------------------------------
    def me(self) -> dict[str, Any]:
        """``GET /me``: the key's owner, admin flag, and whether auth is on."""
        return self._call("GET", "/me")

    def create_key(self, *, owner: str, admin: bool = False,
                   name: str | None = None) -> dict[str, Any]:
        """``POST /admin/keys`` (admin key): the new key's row with the raw ``key`` once."""
        body = {"owner": owner, "admin": admin, **({"name": name} if name else {})}
        return self._call("POST", "/admin/keys", json=body)

    def keys(self, *, owner: str | None = None) -> dict[str, Any]:
        """``GET /admin/keys`` (admin key): ``{data, count}``."""
        return self._call("GET", "/admin/keys", params={"owner": owner} if owner else None)

    def revoke_key(self, key_id: int) -> dict[str, Any]:
        """``DELETE /admin/keys/{id}`` (admin key): the revoked key's row."""
        return self._call("DELETE", f"/admin/keys/{key_id}")
