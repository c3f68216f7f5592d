"""Writing a trained population into actsearch's tables (Optuna's are written by tell)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from models.records import CandidateResult, PopulationResult
from models.spec import Candidate
from store import repo

log = logging.getLogger(__name__)


@dataclass
class TrialIdentity:
    """Who a candidate is: its Optuna trial number (search phase) or the trial it re-runs."""

    candidate: Candidate
    act_params: dict[str, Any]
    hparams: dict[str, Any]
    trial_number: int | None = None
    source_trial_number: int | None = None
    family: str | None = None  # None: the population's (``record_population``'s ``family``)


def _state(result: CandidateResult, told: str | None) -> str:
    if told is not None:
        return told
    return {"complete": "complete", "pruned": "pruned", "deadline": "pruned"}.get(
        result.status, "failed"
    )


def record_population(
    session: Session, *, search_id: int, study_name: str, population_id: int | None,
    phase: str, identities: Sequence[TrialIdentity], result: PopulationResult,
    told: dict[int, str] | None = None, save_weights_with: dict[str, Any] | None = None,
    started_at: dt.datetime | None = None, family: str | None = None,
) -> list[Any]:
    """One trial row per candidate with its epochs, curves and pre-activation statistics.

    No curve analysis here: fits and distillation run once the search is complete
    (:mod:`search.analysis.run`), off the critical path.

    ``save_weights_with`` (scaler and label map) stores each candidate's weights too:
    done for finalists, whose models can be exported. ``started_at``: when the
    population started training (the rows are written after it ends).
    """
    now = dt.datetime.now(dt.timezone.utc)
    rows = []
    for cand in result.candidates:
        ident = identities[cand.index]
        cand_family = ident.family or family
        assert cand_family is not None, "a trial needs its family (identity or population)"
        state = _state(cand, (told or {}).get(ident.trial_number) if ident.trial_number is not None else None)
        duration = cand.history[-1]["elapsed_s"] if cand.history else 0.0
        row = repo.add_trial(
            session, search_id=search_id, population_id=population_id, study_name=study_name,
            trial_number=ident.trial_number, phase=phase, family=cand_family,
            family_params=ident.act_params, hparams=ident.hparams, seed=ident.candidate.seed,
            state=state, value=cand.val_metric, best_value=cand.best_val_metric,
            n_params=cand.n_params if cand.n_params is not None else result.n_params,
            flops=cand.flops if cand.flops is not None else result.flops, device=result.device,
            duration_s=duration, error=cand.error, started_at=started_at, finished_at=now,
            source_trial_number=ident.source_trial_number,
        )
        # a new row: nothing to replace (one bulk INSERT per table and trial)
        repo.add_epoch_metrics(session, trial_id=row.id, rows=cand.history, replace=False)
        repo.add_curves(session, trial_id=row.id, rows=cand.curves, replace=False)
        repo.add_preact_stats(session, trial_id=row.id, rows=cand.preact_stats, replace=False)
        if save_weights_with is not None and cand.state_dict is not None:
            repo.save_weights(session, trial_id=row.id, state_dict=cand.state_dict,
                              scaler=save_weights_with["scaler"],
                              label_map=save_weights_with["label_map"])
        rows.append(row)
    return rows


def record_failed_population(
    session: Session, *, search_id: int, study_name: str, population_id: int | None,
    phase: str, identities: Sequence[TrialIdentity], error: str,
    started_at: dt.datetime | None = None, family: str | None = None,
) -> list[Any]:
    """One ``failed`` trial row per candidate of a population whose training raised or was stopped.

    Optuna is told FAIL separately; these rows make the failure (and its error)
    visible where users look: the search's trial list, ``/trials/{id}`` and
    ``actsearch show``, and keep Optuna's trial count equal to ours.
    """
    now = dt.datetime.now(dt.timezone.utc)
    return [
        repo.add_trial(
            session, search_id=search_id, population_id=population_id, study_name=study_name,
            trial_number=ident.trial_number, phase=phase, family=ident.family or family,
            family_params=ident.act_params, hparams=ident.hparams, seed=ident.candidate.seed,
            state="failed", error=error[:4000], started_at=started_at, finished_at=now,
            source_trial_number=ident.source_trial_number,
        )
        for ident in identities
    ]


def nothing_completed_error(trials: Sequence[Any]) -> str | None:
    """Why a finished search has no result, when every trial it ran failed; else None.

    A search whose populations all raised, ran out of memory or out of time must
    end ``failed`` with the reason, not ``complete`` with an empty leaderboard.
    """
    search = [t for t in trials if t.phase == "search"]
    if not search or any(t.state == "complete" for t in trials):
        return None
    failed = [t for t in search if t.state == "failed"]
    if not failed:
        return None  # every trial pruned (e.g. by the time budget): complete, no winner
    first = next((t.error for t in failed if t.error), "no error recorded")
    return (f"no trial completed: {len(failed)} of {len(search)} search trials failed; "
            f"first error: {first.splitlines()[0][:500]}")
