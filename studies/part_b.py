"""Part B: the activation search's final choice against a ReLU-only search of equal budget.

Both are real searches as ``actsearch search`` runs them (``search.service`` +
``search.coordinator``: an Optuna study in SQLite, training in a child process, median
pruning, finalists re-trained on fresh seeds, the final choice scored once on test):

* **search**: every study family, ``search_trials_per_family`` tuning trials each;
* **relu-only**: ReLU alone with the same total number of trials.

The searches' split is the product's (seed 0, 70/15/15), the same rows as Part A.
Their database is a throw-away temporary file.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from search.coordinator import EmbeddedCoordinator
from search.service import create_search
from search.spec import parse_spec
from store import repo
from store.db import init_db, make_engine, session_factory

from .config import Scale
from .summary import summarise, welch_difference

Log = Callable[[str], None]
SEARCH_SEED = 0


def _run_search(url: str, spec_dict: dict[str, Any], threads: int) -> dict[str, Any]:
    """One embedded search; its leaderboard plus the final choice's per-seed test values."""
    sessions = session_factory(make_engine(url))
    spec = parse_spec(spec_dict)
    with sessions.begin() as session:
        row = create_search(session=session, spec=spec, storage_url=url, run_here=True)
        search_id = row.id
    t0 = time.perf_counter()
    board = EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id,
                                workers=1, threads=threads).run()
    wall = time.perf_counter() - t0
    winner = board.winner
    tests: list[float] = []
    n_trials = 0
    if winner is not None:
        with sessions() as session:
            finalists = repo.list_trials(session, search_id=search_id, phase="finalist",
                                         family=winner.family, limit=None)
            tests = [float(t.test_value) for t in finalists if t.test_value is not None]
            n_trials = len(repo.list_trials(session, search_id=search_id, phase="search",
                                            limit=None))
    return {
        "spec": spec.model_dump(mode="json"), "wall_s": wall, "search_trials": n_trials,
        "leaderboard": board.as_dict(),
        "winner": None if winner is None else {
            "family": winner.family, "family_params": winner.family_params,
            "hparams": winner.hparams, "val_values": winner.values,
            "val": summarise(winner.values), "test_values": tests, "test": summarise(tests),
        },
    }


def run_part_b(scale: Scale, log: Log, threads: int) -> dict[str, Any]:
    """Both searches on every Part B dataset; returns ``{dataset: {...}}`` for results.json."""
    out: dict[str, Any] = {}
    families = list(scale.search_families)
    total = scale.search_trials_per_family * len(families)
    common = {"architecture": scale.architecture, "epochs": scale.search_epochs,
              "batch_size": scale.batch_size, "finalist_seeds": scale.search_finalist_seeds,
              "trials": total, "seed": SEARCH_SEED}
    with tempfile.TemporaryDirectory(prefix="actsearch-study-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'study.db'}"
        init_db(url)
        for name in scale.search_datasets:
            log(f"B  {name:<14} search over {len(families)} families, {total} trials")
            full = _run_search(url, {**common, "dataset": name, "families": families}, threads)
            log(f"B  {name:<14} relu-only search, {total} trials")
            relu = _run_search(url, {**common, "dataset": name, "families": ["relu"]}, threads)
            row: dict[str, Any] = {"search": full, "relu_only": relu}
            if full["winner"] and relu["winner"]:
                row["val_diff"] = welch_difference(full["winner"]["val_values"],
                                                   relu["winner"]["val_values"])
                row["test_diff"] = welch_difference(full["winner"]["test_values"],
                                                    relu["winner"]["test_values"])
            out[name] = row
    return out
