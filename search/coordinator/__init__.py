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
* :mod:`.runner`: ``actsearch serve``'s background loop (``python -m search.coordinator.runner``).
"""

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

__all__ = [
    "ACTIVE_SEARCH_STATES",
    "EmbeddedCoordinator",
    "HeartbeatThread",
    "PopulationOutcome",
    "Progress",
    "ReconcileReport",
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
