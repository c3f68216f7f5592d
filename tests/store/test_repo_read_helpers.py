"""store.repo read helpers added for the API and the runner: counts, progress, trial query."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from core.errors import InvalidInput
from store import repo
from store.tables import SearchRow

META: dict[str, Any] = {"task": "classification", "n_rows": 10, "n_features": 3, "n_classes": 2}


def _search(session: Session, study: str, *, dataset: str = "iris",
            architecture: Any = "mlp:8") -> SearchRow:
    ds = repo.add_dataset(session, name=dataset, data_bytes=dataset.encode(), meta=META)
    return repo.create_search(session, name=study, study_name=study, dataset_id=ds.id,
                              spec={"architecture": architecture})


def _trial(session: Session, search: SearchRow, number: int, **kw: Any) -> Any:
    return repo.add_trial(session, search_id=search.id, family=kw.pop("family", "relu"),
                          family_params={}, hparams={}, seed=number, trial_number=number, **kw)


def test_count_datasets_matches_list(session: Session) -> None:
    for i, name in enumerate(["a", "a", "b"]):
        repo.add_dataset(session, name=name, data_bytes=f"{i}".encode(), meta=META)
    assert repo.count_datasets(session) == 3 == len(repo.list_datasets(session))
    assert repo.count_datasets(session, name="a") == 2
    assert repo.count_datasets(session, latest_only=True) == 2
    assert repo.count_datasets(session, name="zzz") == 0
    assert len(repo.dataset_ids_by_name(session, name="a")) == 2
    assert repo.dataset_ids_by_name(session, name="zzz") == []


def test_oldest_pending_search(session: Session) -> None:
    assert repo.oldest_pending_search(session) is None
    first, second = _search(session, "s1"), _search(session, "s2")
    assert repo.oldest_pending_search(session).id == first.id
    repo.set_search_state(session, search_id=first.id, state="running")
    assert repo.oldest_pending_search(session).id == second.id


def test_search_ids_by_architecture(session: Session) -> None:
    mlp = _search(session, "m", architecture="mlp:8")
    cnn = _search(session, "c", architecture={"kind": "cnn", "conv_channels": [4]})
    default = _search(session, "d", architecture={"hidden": [4]})
    assert repo.search_ids_by_architecture(session, kind="mlp") == [mlp.id, default.id]
    assert repo.search_ids_by_architecture(session, kind="CNN") == [cnn.id]


def test_progress_counts_and_best(session: Session) -> None:
    s = _search(session, "p")
    assert repo.best_search_trial(session, search_id=s.id) is None
    _trial(session, s, 0, state="complete", value=0.5)
    best = _trial(session, s, 1, state="complete", value=0.9, family="prelu")
    _trial(session, s, 2, state="pruned", value=0.95)  # pruned never counts as best
    _trial(session, s, 3, state="failed")
    _trial(session, s, 4, state="complete", value=0.99, phase="finalist")
    repo.add_population(session, search_id=s.id, family="relu", structural={}, k=3)
    done = repo.add_population(session, search_id=s.id, family="relu", structural={}, k=2,
                               phase="finalist")
    repo.set_population_state(session, population_id=done.id, state="complete")
    assert repo.search_trial_counts(session, search_id=s.id) == {
        "search": {"complete": 2, "pruned": 1, "failed": 1}, "finalist": {"complete": 1}}
    assert repo.search_population_counts(session, search_id=s.id) == {
        "search": {"pending": (1, 3)}, "finalist": {"complete": (1, 2)}}
    assert repo.best_search_trial(session, search_id=s.id).id == best.id
    assert repo.has_weights(session, trial_id=best.id) is False


def test_query_trials_across_searches(session: Session) -> None:
    a = _search(session, "a", dataset="d1")
    b = _search(session, "b", dataset="d2")
    for i, v in enumerate([0.1, 0.5, 0.9]):
        _trial(session, a, i, state="complete", value=v)
        _trial(session, b, i, state="complete", value=v + 0.05, family="gelu")
    rows, total = repo.query_trials(session, limit=2)
    assert total == 6 and [r.value for r in rows] == pytest.approx([0.95, 0.9])
    rows, total = repo.query_trials(session, search_ids=[a.id], min_value=0.4)
    assert total == 2 and {r.search_id for r in rows} == {a.id}
    rows, total = repo.query_trials(session, dataset_ids=[b.dataset_id], order_by="value",
                                    descending=False)
    assert total == 3 and [r.family for r in rows] == ["gelu"] * 3 and rows[0].value == pytest.approx(0.15)
    assert repo.query_trials(session, search_ids=[])[1] == 0  # an empty list matches nothing
    assert repo.query_trials(session, family="relu", max_value=0.3)[1] == 1
    with pytest.raises(InvalidInput, match="cannot sort trials"):
        repo.query_trials(session, order_by="colour")
