"""``actsearch.search(..., server=URL)``: the same search on a service, the same result, over HTTP.

The data is uploaded as a file the service validates like any upload (arrays as
NPZ written with ``allow_pickle=False``, a DataFrame as CSV); the result reads
``/searches/{id}``, ``/trials``, ``/leaderboard``, ``/activations`` and ``/export``.
Only built-in architectures: the service never runs user code, so
``search_module`` has no ``server=``.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InvalidInput

from .result import leaderboard_frame


class RemoteSearchResult:
    """A search on a service, read over HTTP; the methods of :class:`~actsearch.SearchResult`."""

    def __init__(self, client: Any, search_id: int) -> None:
        self.client = client
        self.search_id = search_id
        self._export: dict[str, Any] | None = None

    def __repr__(self) -> str:
        d = self.client.search(self.search_id)
        return f"<RemoteSearchResult search {self.search_id} {d['state']} on {self.client.base_url}>"

    @property
    def state(self) -> str:
        return str(self.client.search(self.search_id)["state"])

    @property
    def error(self) -> str | None:
        return self.client.search(self.search_id).get("error")

    @property
    def analysis_state(self) -> str | None:
        """The service's curve analysis of this search (fits, distillation), as the API says."""
        return (self.client.search(self.search_id).get("analysis") or {}).get("state")

    @property
    def analysis_error(self) -> str | None:
        return (self.client.search(self.search_id).get("analysis") or {}).get("error")

    def wait_analysis(self, timeout: float | None = None, poll_s: float = 1.0) -> str | None:
        """Poll until the service's analysis is done or failed (or ``timeout`` s); its state."""
        import time

        end = None if timeout is None else time.monotonic() + timeout
        while True:
            detail = self.client.search(self.search_id)
            state = (detail.get("analysis") or {}).get("state")
            if state not in ("pending", "running") or detail.get("state") != "complete":
                return state
            if end is not None and time.monotonic() >= end:
                return state
            time.sleep(poll_s)

    @property
    def board(self) -> Any:
        from .remote import leaderboard_from_api

        return leaderboard_from_api(self.client.leaderboard(self.search_id))

    @property
    def leaderboard(self) -> Any:
        return leaderboard_frame(self.board)

    @property
    def trials(self) -> Any:
        import pandas as pd

        rows: list[dict[str, Any]] = []
        while True:
            page = self.client._call("GET", f"/searches/{self.search_id}/trials",
                                     params={"limit": 500, "offset": len(rows), "sort": "created",
                                             "order": "asc"})
            rows += page["data"]
            if len(rows) >= page["count"] or not page["data"]:
                break
        for r in rows:
            r["lr"] = (r.get("hparams") or {}).get("lr")
            r["weight_decay"] = (r.get("hparams") or {}).get("weight_decay")
        return pd.DataFrame(rows).set_index("id") if rows else pd.DataFrame()

    def _bundle(self) -> dict[str, Any]:
        """The export zip's program and meta, downloaded once."""
        if self._export is None:
            data = self.client.export(self.search_id)
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                self._export = {"meta": json.loads(archive.read("meta.json")),
                                "program": archive.read("model.pt2"), "zip": data}
        return self._export

    def best_model(self) -> Any:
        """The exported program of the final choice (``torch.export``), on standardised rows."""
        import torch

        return torch.export.load(io.BytesIO(self._bundle()["program"])).module()

    def predict(self, X: Any) -> np.ndarray:
        import torch

        meta = self._bundle()["meta"]
        X = np.asarray(X, dtype=np.float32)
        X = X.reshape(len(X), -1)
        scaler = meta["scaler"]
        Xs = (X - np.asarray(scaler["mean"], np.float32)) / np.asarray(scaler["std"], np.float32)
        with torch.no_grad():
            out = self.best_model()(torch.as_tensor(Xs, dtype=torch.float32)).numpy()
        if meta["task"] == "classification":
            return np.asarray(meta["class_names"])[out.argmax(1)]
        ts = meta.get("target_scaler")
        out = out.reshape(-1)
        return out * ts["std"] + ts["mean"] if ts else out

    def best_trial_id(self) -> int:
        return int(self._bundle()["meta"]["trial_id"])

    def curves(self, trial_id: int | None = None) -> list[dict[str, Any]]:
        tid = self.best_trial_id() if trial_id is None else trial_id
        acts = self.client.trial_activations(tid)
        return [{"layer": c["layer"], "epoch": c["epoch"], "params": c["params"],
                 "x": np.asarray([np.nan if v is None else v for v in c["x"]], np.float32),
                 "y": np.asarray(c["y"], np.float32).reshape(c["y_shape"])}
                for c in acts["curves"]]

    def plot_curves(self, trial_id: int | None = None) -> Any:
        from .result import SearchResult

        return SearchResult.plot_curves(self, trial_id)  # type: ignore[arg-type]

    def export(self, path: str | Path, activations: str = "learned") -> Path:
        path = Path(path)
        path.write_bytes(self.client.export(self.search_id, activations=activations))
        return path


def _upload(client: Any, data: Any, label: str | None, task: str | None,
            name: str | None) -> str:
    """Upload ``data`` unless it is a built-in or stored name; returns the dataset's name."""
    import pandas as pd

    if isinstance(data, str) and not Path(data).is_file():
        return data  # a built-in or a dataset already on the service
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(data, tuple):
            if len(data) != 2:
                raise InvalidInput(f"data as a tuple must be (X, y), got {len(data)} items")
            X, y = np.asarray(data[0]), np.asarray(data[1])
            path = Path(tmp) / f"{name or 'arrays'}.npz"
            np.savez(path, X=X, y=y, allow_pickle=False)
            label = "y"
        elif isinstance(data, pd.DataFrame):
            path = Path(tmp) / f"{name or 'dataframe'}.csv"
            data.to_csv(path, index=False)
        else:
            path = Path(data)
        up = client.upload_dataset(path, name=name or path.stem, label=label, task=task)
    return str(up["name"])


def remote_library_search(server: str, api_key: str | None, data: Any, label: str | None,
                          options: dict[str, Any], *, name: str | None,
                          progress: bool) -> RemoteSearchResult:
    """Upload, submit, follow the search to its end; the result reads the service."""
    from .client import ActsearchClient

    client = ActsearchClient(server, api_key=api_key)
    spec = dict(options)
    task = spec.get("task")
    spec["dataset"] = _upload(client, data, label, task, name)
    if isinstance(data, str) and not Path(data).is_file() and label is not None:
        spec["label"] = label
    created = client.create_search(spec)
    search_id = int(created["id"])
    bar: Any = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=None, desc=f"search {search_id} on {client.base_url}", unit="trial")
        except ImportError:
            bar = None

    def on_progress(detail: dict[str, Any]) -> None:
        if bar is None:
            return
        p = detail["progress"]
        bar.total, bar.n = p["budget"], min(p["done"], p["budget"] or 0)
        bar.set_postfix_str(f"{detail['state']} pruned {p['pruned']} failed {p['failed']}",
                            refresh=True)

    try:
        client.wait(search_id, on_progress)
    finally:
        if bar is not None:
            bar.close()
    return RemoteSearchResult(client, search_id)
