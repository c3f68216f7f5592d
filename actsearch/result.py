"""What ``actsearch.search`` and ``search_module`` return: a stored search, read from its database.

Every property reads the rows the coordinator wrote (the same ones ``actsearch show``
and the dashboard read), so a result is as good after a restart, through
:func:`actsearch.load`, as straight after the search.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import Conflict, InvalidInput

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.orm import Session, sessionmaker
    from torch import nn

    from search.protocol import Leaderboard

Build = Any  # Callable[[act], nn.Module]; torch is imported lazily


def leaderboard_frame(board: Leaderboard) -> pd.DataFrame:
    """The leaderboard with the CLI's columns (``actsearch search``'s table)."""
    import pandas as pd

    m = board.metric
    rows = []
    for rank, r in enumerate(board.rows, start=1):
        rows.append({
            "#": rank, "family": r.family, f"val {m}": r.mean, "±95% CI": r.ci95,
            "seeds": r.n_seeds, "Δ vs relu": None if r.baseline else r.delta_vs_baseline,
            "baseline": r.baseline, "params": r.n_params, "FLOPs": r.flops,
            "trials": r.search_trials, "pruned": r.search_pruned, f"test {m}": r.test_mean,
            "test ±95% CI": r.test_ci95, "family_params": r.family_params,
        })
    columns = ["#", "family", f"val {m}", "±95% CI", "seeds", "Δ vs relu", "baseline", "params",
               "FLOPs", "trials", "pruned", f"test {m}", "test ±95% CI", "family_params"]
    return pd.DataFrame(rows, columns=columns).set_index("#")


class SearchResult:
    """A search in the embedded database: its leaderboard, trials, best model and curves.

    ``build`` is the user's module factory of a ``search_module`` search (only its
    process can rebuild the module); ``None`` for built-in architectures.
    """

    def __init__(self, search_id: int, *, sessions: sessionmaker[Session], url: str,
                 build: Build | None = None) -> None:
        self.search_id = search_id
        self._sessions = sessions
        self.database_url = url
        self._build = build
        self._cache: dict[str, Any] = {}
        self._analysis: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<SearchResult search {self.search_id} {self.state} {self.name!r}>"

    # ----- rows ---------------------------------------------------------------------
    def _row(self) -> Any:
        from store import repo

        with self._sessions() as session:
            row = repo.get_search(session, search_id=self.search_id)
            session.expunge(row)
            return row

    @property
    def state(self) -> str:
        return str(self._row().state)

    @property
    def name(self) -> str:
        return str(self._row().name)

    @property
    def error(self) -> str | None:
        return self._row().error

    @property
    def spec(self) -> Any:
        from search.spec import SearchSpec

        return SearchSpec.model_validate(self._row().spec)

    @property
    def board(self) -> Leaderboard:
        """The leaderboard as the protocol's dataclass (what ``leaderboard`` tabulates)."""
        from search.progress import search_leaderboard
        from store import repo

        with self._sessions() as session:
            return search_leaderboard(session, row=repo.get_search(session,
                                                                    search_id=self.search_id))

    @property
    def leaderboard(self) -> pd.DataFrame:
        """Finalists per family: mean ± 95% interval over seeds, Δ vs ReLU, test of the winner."""
        return leaderboard_frame(self.board)

    @property
    def control(self) -> dict[str, Any] | None:
        """The equal-compute ReLU control and its verdict (``control="relu"``), as ``--json``
        prints it: ``family``, ``mean``, ``ci95``, ``test_mean``, ``test_ci95``, ``message``...;
        None when not asked or not finished."""
        c = self.board.control
        return c.as_dict() if c is not None else None

    @property
    def trials(self) -> pd.DataFrame:
        """One row per trial (search and finalist phases), as ``GET /searches/{id}/trials``."""
        import pandas as pd

        from store import repo

        with self._sessions() as session:
            rows = repo.list_trials(session, search_id=self.search_id, limit=None)
            data = [{"id": t.id, "trial_number": t.trial_number, "phase": t.phase,
                     "family": t.family, "state": t.state, "value": t.value,
                     "best_value": t.best_value, "test_value": t.test_value, "seed": t.seed,
                     "lr": (t.hparams or {}).get("lr"),
                     "weight_decay": (t.hparams or {}).get("weight_decay"),
                     "family_params": t.family_params, "n_params": t.n_params, "flops": t.flops,
                     "device": t.device, "duration_s": t.duration_s, "error": t.error}
                    for t in rows]
        return pd.DataFrame(data).set_index("id") if data else pd.DataFrame()

    # ----- the curve analysis -------------------------------------------------------------
    @property
    def analysis_state(self) -> str | None:
        """Fits and distillation: ``pending``, ``running``, ``done``, ``failed``, or None
        (nothing to analyse). The leaderboard never waits for them."""
        return self._row().analysis_state

    @property
    def analysis_error(self) -> str | None:
        return self._row().analysis_error

    def start_analysis(self) -> threading.Thread | None:
        """Run the pending analysis in a background thread of this process (None: none pending).

        Not a daemon thread: a script's interpreter finishes it before exiting; a
        process killed mid-way leaves it to be resumed (``actsearch resume``,
        ``actsearch serve``, or :meth:`wait_analysis` after :func:`actsearch.load`).
        """
        from search.analysis.run import UNFINISHED, analyse_search

        if self._analysis is not None and self._analysis.is_alive():
            return self._analysis
        if self.state != "complete" or self.analysis_state not in UNFINISHED:
            return None

        def run() -> None:
            try:
                analyse_search(self._sessions, self.search_id)
            except Exception:  # noqa: BLE001 - recorded (or left pending) by analyse_search
                import logging

                logging.getLogger(__name__).warning("analysis of search %s stopped",
                                                    self.search_id, exc_info=True)

        self._analysis = threading.Thread(target=run, name=f"actsearch-analysis-{self.search_id}")
        self._analysis.start()
        return self._analysis

    def wait_analysis(self, timeout: float | None = None, poll_s: float = 0.5) -> str | None:
        """Wait until the analysis is done or failed; returns its state.

        Waits for this result's background thread, or for another process running it;
        one that nobody runs (pending, or left running by a process that died) runs
        here and now. ``timeout``: seconds, then the current state is returned.
        """
        from search.analysis.run import UNFINISHED, analyse_search, orphaned

        end = None if timeout is None else time.monotonic() + timeout
        while True:
            thread = self._analysis
            if thread is not None and thread.is_alive():
                thread.join(None if end is None else max(0.0, end - time.monotonic()))
            state = self.analysis_state
            if state not in UNFINISHED or self.state != "complete":
                return state
            if end is not None and time.monotonic() >= end:
                return state
            if orphaned(self._sessions, self.search_id):
                analyse_search(self._sessions, self.search_id)
                continue
            time.sleep(poll_s)

    def fits(self, trial_id: int | None = None) -> list[dict[str, Any]]:
        """A trial's stored curve fits (default: the final choice's best finalist), best first.

        Kinds ``closed_form``, ``linear``, ``distilled`` per layer, and ``network`` (layer -1:
        the finalist's distilled and merged network). Empty until the analysis has run
        (:attr:`analysis_state`, :meth:`wait_analysis`).
        """
        from store import repo

        return self._read_trial(trial_id, repo.trial_fits)

    def _read_trial(self, trial_id: int | None, read: Any) -> Any:
        """``read(session, trial_id=...)`` for one of this search's trials (default: the
        best finalist); a trial of another search is refused."""
        from store import repo

        tid = self.best_trial().id if trial_id is None else trial_id
        with self._sessions() as session:
            trial = repo.get_trial(session, trial_id=tid)
            if trial.search_id != self.search_id:
                raise InvalidInput(f"trial {tid} belongs to search {trial.search_id}, not "
                                   f"{self.search_id}")
            return read(session, trial_id=tid)

    # ----- the final choice -------------------------------------------------------------
    def best_trial(self) -> Any:
        """The final choice's best finalist row (Conflict until a finalist has finished)."""
        from search.export import best_finalist

        with self._sessions() as session:
            trial, _ = best_finalist(session, search_id=self.search_id)
            session.expunge(trial)
            return trial

    def _prepared(self) -> Any:
        if "prepared" not in self._cache:
            from search.service import prepare_data

            row = self._row()
            with self._sessions() as session:
                self._cache["prepared"] = prepare_data(session, dataset_id=row.dataset_id,
                                                       spec=self.spec)
        return self._cache["prepared"]

    def best_model(self) -> nn.Module:
        """The final choice as an ``nn.Module`` in eval mode, on standardised inputs.

        Use :meth:`predict` for raw rows: it applies the training scaler first.
        """
        from store import repo

        trial = self.best_trial()
        with self._sessions() as session:
            state_dict, _, _ = repo.load_weights(session, trial_id=trial.id)
        spec = self.spec
        data = self._prepared()
        if spec.is_module:
            if self._build is None:
                raise InvalidInput(
                    f"search {self.search_id} trained your own module "
                    f"({spec.module_arch().name}); pass its build to rebuild it: "
                    "actsearch.load(search_id, build=build)")
            from models.user_module import load_candidate

            return load_candidate(self._build, trial.family, dict(trial.family_params),
                                  spec.module_arch().slots, state_dict)
        from models.export import single_candidate

        return single_candidate(spec.arch_spec(), trial.family, trial.family_params, state_dict,
                                data.dataset.n_features, data.n_outputs,
                                data.dataset.task).eval()

    def predict(self, X: Any) -> np.ndarray:
        """Labels (classification: the original class names) or values for raw rows ``X``.

        ``X`` is ``(N, D)`` or ``(N, *input_shape)``, unscaled, as given to the search;
        the training scaler is applied, and regression outputs are mapped back to the
        label's units.
        """
        import torch

        from search.datasets import apply_scaler, inverse_target

        data = self._prepared()
        s, ds = data.splits, data.dataset
        X = np.asarray(X, dtype=np.float32)
        X = X.reshape(len(X), -1) if X.ndim > 2 else X
        if X.ndim != 2 or X.shape[1] != ds.n_features:
            raise InvalidInput(f"X must have {ds.n_features} features per row (as the search's "
                               f"data), got shape {np.shape(X)}")
        Xs = apply_scaler(X, s.scaler)
        model = self.best_model()
        with torch.no_grad():
            if self.spec.is_module:
                from models.user_module import module_outputs

                out = module_outputs(model, Xs, s.input_shape, ds.task)
            else:
                out = model(torch.as_tensor(Xs, dtype=torch.float32)).numpy()
        if ds.task == "classification":
            names = np.asarray(s.label_map if s.label_map is not None else ds.class_names)
            return names[np.asarray(out).argmax(1)]
        out = np.asarray(out).reshape(-1)
        return inverse_target(out, s.target_scaler) if s.target_scaler else out

    # ----- curves -------------------------------------------------------------------------
    def curves(self, trial_id: int | None = None) -> list[dict[str, Any]]:
        """Learned curves of one trial (default: the final choice's best finalist).

        Each: ``layer`` (the ``act()`` slot of a user module), ``epoch``, ``x`` ``(G,)``,
        ``y`` ``(U', G)`` float32 arrays and ``params``.
        """
        from store import repo

        return self._read_trial(trial_id, repo.trial_curves)

    def plot_curves(self, trial_id: int | None = None) -> Any:
        """A matplotlib figure of a trial's learned curves per layer, colour = epoch."""
        import matplotlib.pyplot as plt

        curves = self.curves(trial_id)
        layers = sorted({c["layer"] for c in curves})
        if not layers:
            raise Conflict("this trial has no learned curves (its family mixes units, or it "
                           "recorded none)")
        fig, axes = plt.subplots(1, len(layers), figsize=(4 * len(layers), 3.2), squeeze=False)
        cmap = plt.get_cmap("viridis")
        for ax, layer in zip(axes[0], layers, strict=True):
            mine = sorted((c for c in curves if c["layer"] == layer), key=lambda c: c["epoch"])
            last = max(c["epoch"] for c in mine) or 1
            for c in mine:
                ys = np.asarray(c["y"]).reshape(-1, len(c["x"]))
                ax.plot(c["x"], np.median(ys, 0), color=cmap(c["epoch"] / last),
                        label=f"epoch {c['epoch']}")
            ax.set_title(f"layer {layer}")
            ax.set_xlabel("pre-activation")
            ax.axhline(0, color="grey", lw=0.5)
            ax.axvline(0, color="grey", lw=0.5)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        return fig

    # ----- export -------------------------------------------------------------------------
    def export(self, path: str | Path, activations: str = "learned") -> Path:
        """Write the best model as a zip (what ``GET /searches/{id}/export`` serves)."""
        path = Path(path)
        if self.spec.is_module:
            from .module_export import export_module

            data = export_module(self, activations=activations)
        else:
            from search.export import export_search

            with self._sessions() as session:
                data = export_search(session, search_id=self.search_id, activations=activations)
        path.write_bytes(data)
        return path
