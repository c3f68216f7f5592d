"""One search state machine for both modes; the modes differ only in their executor.

* :mod:`.steps`: plan, claim, prepare (ask), commit (tell and record); :mod:`.finish`:
  advance (finalists), score the final choice, complete.
* :mod:`.population` (ask K trials, prune each alone, tell each), :mod:`.planner` (which
  family next), :mod:`.results` (the rows a trained population writes), :mod:`.limits`
  (time and memory limits of the processes that train).
* :mod:`.recovery`: the reconciler (distributed) and resume after an interruption (embedded).
* :mod:`.local`: the embedded executor, warm training children fed by one writing process.
* :mod:`.inline`: the distributed executor, a Celery task training in its own process.
* :mod:`.child`: the training child's main loop.
* :mod:`.data`: the prepared splits, cached per process.
* :mod:`.trainers`: warm training processes that outlive a search (the runner keeps them).
* :mod:`.runner`: ``actsearch serve``'s background loop (``python -m search.coordinator.runner``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Lazy: a training child imports ``search.coordinator.child`` and nothing else of this
# package (no optuna, no sqlalchemy), so its start costs only torch's import.
_EXPORTS = {
    "ACTIVE_SEARCH_STATES": ".steps",
    "EmbeddedCoordinator": ".local",
    "HeartbeatThread": ".inline",
    "PopulationOutcome": ".steps",
    "Progress": ".local",
    "ReconcileReport": ".recovery",
    "TrainerPool": ".trainers",
    "advance_search": ".finish",
    "best_summary": ".finish",
    "clear_caches": ".data",
    "fail_search": ".recovery",
    "finalist_seeds": ".steps",
    "interrupt": ".recovery",
    "lock_holder": ".local",
    "plan_search": ".steps",
    "population_seed": ".steps",
    "prepared_data": ".data",
    "reconcile": ".recovery",
    "release_interrupted": ".recovery",
    "run_population": ".inline",
    "search_lock": ".local",
}

if TYPE_CHECKING:
    from .data import clear_caches, prepared_data
    from .finish import advance_search, best_summary
    from .inline import HeartbeatThread, run_population
    from .local import EmbeddedCoordinator, Progress, lock_holder, search_lock
    from .recovery import (
        ReconcileReport,
        fail_search,
        interrupt,
        reconcile,
        release_interrupted,
    )
    from .steps import (
        ACTIVE_SEARCH_STATES,
        PopulationOutcome,
        finalist_seeds,
        plan_search,
        population_seed,
    )
    from .trainers import TrainerPool


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ACTIVE_SEARCH_STATES",
    "EmbeddedCoordinator",
    "HeartbeatThread",
    "PopulationOutcome",
    "Progress",
    "ReconcileReport",
    "TrainerPool",
    "advance_search",
    "best_summary",
    "clear_caches",
    "fail_search",
    "finalist_seeds",
    "interrupt",
    "lock_holder",
    "plan_search",
    "population_seed",
    "prepared_data",
    "reconcile",
    "release_interrupted",
    "run_population",
    "search_lock",
]
