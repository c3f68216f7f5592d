"""Who computes a trained candidate's test metric (the final choice's, the control's).

:data:`Evaluator` has :func:`models.engine.evaluate`'s signature
``(arch, family, act_params, state_dict, X, y, n_outputs, task) -> float``. Celery
workers and the recovery score in their own process (:func:`engine_evaluate`); the
embedded coordinator asks its warm training child instead
(:meth:`.trainers._Child.evaluate`), so the coordinator never imports torch: on a small
search that import was ~2 s of the command, on the path to the leaderboard.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Evaluator = Callable[..., float]


def engine_evaluate(*args: Any, **kwargs: Any) -> float:
    """:func:`models.engine.evaluate` in this process (torch: imported on the first call)."""
    from models.engine import evaluate

    return evaluate(*args, **kwargs)
