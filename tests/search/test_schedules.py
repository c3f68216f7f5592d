"""Scheduled searches: cron arithmetic, claiming, templates, warm starts, the tick loop.

Each test gets its own migrated SQLite file; searches are created but never
trained (a parent's trials are asked and told by hand), so the file runs in seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.errors import Conflict, InvalidInput, NotFound
from search import schedules
from search.coordinator.population import ask_population
from search.datasets import load_builtin
from search.service import create_search, open_study, register_dataset
from search.spec import SearchSpec, parse_spec
from store import repo
from store.db import init_db, make_engine, session_factory
from store.tables import ScheduleRow, SearchRow

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=timezone.utc)
RERUN = {"kind": "rerun", "spec": {"dataset": "iris", "architecture": "mlp:8",
                                   "families": ["relu"], "trials": 2, "epochs": 2}}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, sessionmaker[Session]]]:
    url = f"sqlite:///{tmp_path / 'actsearch.db'}"
    init_db(url)
    engine = make_engine(url)
    yield url, session_factory(engine)
    engine.dispose()


def _make(sessions: sessionmaker[Session], *, cron: str = "0 3 * * *",
          template: dict[str, Any] | None = None, name: str = "nightly",
          now: datetime = T0, **kw: Any) -> int:
    with sessions.begin() as session:
        return schedules.create_schedule(session, name=name, cron=cron,
                                         template=template or RERUN, now=now, **kw).id


def _schedule(sessions: sessionmaker[Session], schedule_id: int) -> ScheduleRow:
    with sessions() as session:
        return repo.get_schedule(session, schedule_id=schedule_id)


# --------------------------------------------------------------------------- cron


@pytest.mark.parametrize(("cron", "tz", "after", "expected"), [
    ("0 3 * * *", "UTC", T0, datetime(2026, 1, 6, 3, 0, tzinfo=timezone.utc)),
    ("0 3 * * *", "UTC", datetime(2026, 1, 6, 3, 0, tzinfo=timezone.utc),
     datetime(2026, 1, 7, 3, 0, tzinfo=timezone.utc)),  # strictly after
    ("0 3 * * *", "Europe/Paris", T0, datetime(2026, 1, 6, 2, 0, tzinfo=timezone.utc)),  # CET
    ("0 3 * * *", "Europe/Paris", datetime(2026, 7, 1, tzinfo=timezone.utc),
     datetime(2026, 7, 1, 1, 0, tzinfo=timezone.utc)),  # CEST
    ("* * * * * */5", "UTC", datetime(2026, 1, 1, 0, 0, 2, tzinfo=timezone.utc),
     datetime(2026, 1, 1, 0, 0, 5, tzinfo=timezone.utc)),  # six fields: seconds last
    ("@hourly", "UTC", T0, datetime(2026, 1, 5, 13, 0, tzinfo=timezone.utc)),
    ("30 9 * * 1-5", "UTC", datetime(2026, 1, 9, 10, tzinfo=timezone.utc),  # Friday ->
     datetime(2026, 1, 12, 9, 30, tzinfo=timezone.utc)),  # Monday
])
def test_next_run_time(cron: str, tz: str, after: datetime, expected: datetime) -> None:
    got = schedules.next_run_time(schedules.validate_cron(cron, tz), tz, after)
    assert got == expected and got.tzinfo is not None


@pytest.mark.parametrize(("cron", "fragment"), [
    ("bad", "has 1 field"), ("0 3 * *", "has 4 fields"), ("* * * * * * *", "has 7 fields"),
    ("61 * * * *", "out of range"), ("@sometimes", "unknown alias"),
    ("0 0 30 2 *", "never matches"), ("", "has 0 fields"), ("*/0 * * * *", "not a valid"),
])
def test_bad_cron_quotes_it_and_gives_an_example(cron: str, fragment: str) -> None:
    with pytest.raises(InvalidInput) as err:
        schedules.validate_cron(cron)
    assert repr(cron) in err.value.detail and fragment in err.value.detail
    assert '"0 3 * * *"' in err.value.detail


def test_bad_timezone() -> None:
    with pytest.raises(InvalidInput, match="Mars/Base"):
        schedules.validate_cron("0 3 * * *", "Mars/Base")


# --------------------------------------------------------------------------- create


def test_create_computes_next_run_and_stores_a_normalised_template(db: Any) -> None:
    _, sessions = db
    sid = _make(sessions, cron="0  3 * * *", tz="Europe/Paris")
    row = _schedule(sessions, sid)
    assert (row.cron, row.timezone, row.state, row.run_count) == ("0 3 * * *", "Europe/Paris",
                                                                  "active", 0)
    assert row.next_run_at == datetime(2026, 1, 6, 2, 0, tzinfo=timezone.utc)
    assert row.template == {"kind": "rerun", "spec": {
        "dataset": "iris", "architecture": "mlp:8", "families": ["relu"], "trials": 2,
        "epochs": 2}}


@pytest.mark.parametrize(("template", "fragment"), [
    ({"kind": "sometimes"}, "not a template kind"),
    ({"kind": "rerun"}, "needs a search spec"),
    ({"kind": "rerun", "spec": {"dataset": "iris", "families": ["nope"]}}, "nope"),
    ({"kind": "rerun", "spec": {"dataset": "iris", "dataset_version": 1}}, "latest version"),
    ({"kind": "rerun", "spec": {"dataset": "iris", "warm_start_from": 1}}, "add_trials"),
    ({"kind": "rerun", "spec": {"dataset": "iris"}, "extra": 1}, "unknown keys"),
    ({"kind": "rerun", "spec": {"dataset": "no-such-data"}}, "not a stored dataset"),
    ({"kind": "add_trials", "search_id": 99, "trials": 4}, "search 99 not found"),
    ({"kind": "add_trials", "search_id": 1, "trials": 0}, "template.trials"),
    ({"kind": "add_trials", "search_id": "x", "trials": 4}, "template.search_id"),
])
def test_bad_templates(db: Any, template: dict[str, Any], fragment: str) -> None:
    _, sessions = db
    with pytest.raises(InvalidInput) as err, sessions.begin() as session:
        schedules.create_schedule(session, name="x", cron="0 3 * * *", template=template)
    assert fragment in err.value.detail


def test_over_http_a_rerun_dataset_is_never_a_file_path(db: Any, tmp_path: Path) -> None:
    _, sessions = db
    csv = tmp_path / "points.csv"
    csv.write_text("a,b\n1,0\n")
    template = {"kind": "rerun", "spec": {"dataset": str(csv)}}
    with pytest.raises(InvalidInput, match="file path"), sessions.begin() as session:
        schedules.create_schedule(session, name="x", cron="0 3 * * *", template=template,
                                  allow_files=False)
    with sessions.begin() as session:  # the local CLI may name a file
        schedules.create_schedule(session, name="x", cron="0 3 * * *", template=template)


# --------------------------------------------------------------------------- firing


def test_rerun_uses_the_latest_version_at_firing_time(db: Any) -> None:
    url, sessions = db
    with sessions.begin() as session:
        v1 = register_dataset(session, dataset=load_builtin("two_spirals", n=200, seed=1),
                              name="points")
        assert v1.version == 1
    template = {"kind": "rerun", "spec": {"dataset": "points", "architecture": "mlp:8",
                                          "families": ["relu"], "trials": 2, "epochs": 2}}
    sid = _make(sessions, template=template)
    with sessions.begin() as session:
        v2 = register_dataset(session, dataset=load_builtin("two_spirals", n=240, seed=2),
                              name="points")
        assert v2.version == 2
        v2_id = v2.id
    created = schedules.tick(sessions, storage_url=url, now=T0 + timedelta(days=1))
    assert len(created) == 1
    with sessions() as session:
        search = repo.get_search(session, search_id=created[0])
        assert search.dataset_id == v2_id and search.state == "pending"
        assert search.spec["dataset_version"] == 2 and search.schedule_id == sid
        assert search.name.startswith("nightly @ 2026-01-06")
    row = _schedule(sessions, sid)
    assert row.last_search_id == created[0] and row.run_count == 1 and row.last_error is None
    assert row.last_run_at == T0 + timedelta(days=1)


def test_missed_runs_fire_once_then_schedule_from_now(db: Any) -> None:
    url, sessions = db
    sid = _make(sessions)  # daily at 03:00; the scheduler was down for ten days
    now = T0 + timedelta(days=10, hours=1)
    assert len(schedules.tick(sessions, storage_url=url, now=now)) == 1
    assert schedules.tick(sessions, storage_url=url, now=now) == []
    row = _schedule(sessions, sid)
    assert row.run_count == 1
    assert row.next_run_at == datetime(2026, 1, 16, 3, 0, tzinfo=timezone.utc)


def test_not_due_yet_does_nothing(db: Any) -> None:
    url, sessions = db
    _make(sessions)
    assert schedules.tick(sessions, storage_url=url, now=T0 + timedelta(hours=1)) == []


def test_two_concurrent_ticks_fire_each_schedule_once(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, sessions = db
    ids = [_make(sessions, name=f"s{i}") for i in range(3)]
    barrier = threading.Barrier(2)
    original = schedules.due_schedules

    def both_read_first(session: Session, **kw: Any) -> list[ScheduleRow]:
        rows = original(session, **kw)
        barrier.wait(timeout=20)  # both schedulers see every schedule due before claiming
        return rows

    monkeypatch.setattr(schedules, "due_schedules", both_read_first)
    # Optuna creates its own tables on first use without a lock; in a real database
    # they exist after the first search. Create them here so only our claim is tested.
    optuna.storages.RDBStorage(url).engine.dispose()
    results: list[list[int]] = []
    now = T0 + timedelta(days=1)

    def run() -> None:
        engine = make_engine(url)
        results.append(schedules.tick(session_factory(engine), storage_url=url, now=now))
        engine.dispose()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 2
    created = results[0] + results[1]
    assert len(created) == len(set(created)) == 3
    with sessions() as session:
        assert [repo.get_schedule(session, schedule_id=i).run_count for i in ids] == [1, 1, 1]
        assert repo.count_searches(session) == 3


def test_paused_schedules_never_fire_and_resume_starts_from_now(db: Any) -> None:
    url, sessions = db
    sid = _make(sessions)
    with sessions.begin() as session:
        schedules.pause_schedule(session, schedule_id=sid)
    with pytest.raises(Conflict, match="already paused"), sessions.begin() as session:
        schedules.pause_schedule(session, schedule_id=sid)
    for days in (1, 2, 30):
        assert schedules.tick(sessions, storage_url=url, now=T0 + timedelta(days=days)) == []
    assert _schedule(sessions, sid).next_run_at is None
    later = T0 + timedelta(days=30, hours=5)
    with sessions.begin() as session:
        row = schedules.resume_schedule(session, schedule_id=sid, now=later)
        assert row.state == "active"
        assert row.next_run_at == datetime(2026, 2, 5, 3, 0, tzinfo=timezone.utc)
    with pytest.raises(Conflict, match="already active"), sessions.begin() as session:
        schedules.resume_schedule(session, schedule_id=sid)
    assert len(schedules.tick(sessions, storage_url=url, now=later + timedelta(days=1))) == 1


def test_a_failing_template_records_last_error_and_the_next_schedule_still_fires(
    db: Any,
) -> None:
    url, sessions = db
    broken = _make(sessions, name="broken", cron="0 1 * * *")  # due first
    fine = _make(sessions, name="fine", cron="0 2 * * *")
    with sessions.begin() as session:  # its dataset vanished since it was created
        session.execute(update(ScheduleRow).where(ScheduleRow.id == broken).values(
            template={"kind": "rerun", "spec": {"dataset": "gone-dataset"}}))
    now = T0 + timedelta(days=1)
    created = schedules.tick(sessions, storage_url=url, now=now)
    assert len(created) == 1
    bad, good = _schedule(sessions, broken), _schedule(sessions, fine)
    assert bad.last_error and "gone-dataset" in bad.last_error and bad.last_search_id is None
    assert bad.run_count == 1 and bad.next_run_at == datetime(2026, 1, 7, 1, tzinfo=timezone.utc)
    assert good.last_error is None and good.last_search_id == created[0]


def test_delete_keeps_the_searches_it_created(db: Any) -> None:
    url, sessions = db
    sid = _make(sessions)
    created = schedules.tick(sessions, storage_url=url, now=T0 + timedelta(days=1))
    with sessions() as session:
        assert [r.id for r in schedules.schedule_runs(session, schedule_id=sid)] == created
    with sessions.begin() as session:
        schedules.delete_schedule(session, schedule_id=sid)
    with sessions() as session:
        assert repo.get_search(session, search_id=created[0]).schedule_id is None
        with pytest.raises(NotFound):
            repo.get_schedule(session, schedule_id=sid)
        with pytest.raises(NotFound):
            schedules.schedule_runs(session, schedule_id=sid)


# --------------------------------------------------------------------------- warm starts

PARENT = {"dataset": "iris", "architecture": "mlp:8", "families": ["relu", "prelu"],
          "trials": 6, "epochs": 3}


def _parent_with_trials(url: str, sessions: sessionmaker[Session]) -> tuple[int, str]:
    """A search whose study holds 2 complete, 1 pruned and 1 failed trial (no training)."""
    spec = parse_spec(PARENT)
    with sessions.begin() as session:
        row = create_search(session=session, spec=spec, storage_url=url)
        search_id, study_name = row.id, row.study_name
    study = open_study(spec, study_name, url)
    relu = ask_population(study, study.sampler, "relu", 3, spec)
    study.tell(relu[0].trial, 0.8)
    study.tell(relu[1].trial, 0.9)
    for step, value in enumerate((0.2, 0.3)):
        relu[2].trial.report(value, step)
    study.tell(relu[2].trial, state=TrialState.PRUNED)
    prelu = ask_population(study, study.sampler, "prelu", 1, spec)
    study.tell(prelu[0].trial, state=TrialState.FAIL)
    return search_id, study_name


def test_add_trials_warm_starts_from_the_parent(db: Any) -> None:
    url, sessions = db
    parent_id, parent_study = _parent_with_trials(url, sessions)
    sid = _make(sessions, name="more", template={"kind": "add_trials", "search_id": parent_id,
                                                 "trials": 4})
    created = schedules.tick(sessions, storage_url=url, now=T0 + timedelta(days=1))
    assert len(created) == 1
    with sessions() as session:
        child = repo.get_search(session, search_id=created[0])
        spec = SearchSpec.model_validate(child.spec)
        assert child.schedule_id == sid and child.state == "pending"
        parent_row = repo.get_search(session, search_id=parent_id)
        assert child.dataset_id == parent_row.dataset_id
    assert (spec.trials, spec.warm_start_from, spec.families) == (4, parent_id, ["relu", "prelu"])
    assert spec.trials_per_family() == 2  # its own budget, whatever the parent had
    parent = optuna.load_study(study_name=parent_study, storage=url).trials
    study = open_study(spec, child.study_name, url)
    copied = study.trials  # before any ask
    assert [t.state for t in copied] == [TrialState.COMPLETE, TrialState.COMPLETE,
                                         TrialState.PRUNED]
    for old, new in zip(parent[:3], copied, strict=True):
        assert new.params == old.params and new.distributions == old.distributions
        assert new.values == old.values and new.intermediate_values == old.intermediate_values
        assert new.user_attrs["warm_start"] == {"search_id": parent_id,
                                                "trial_number": old.number}
    assert study.user_attrs["warm_start_from"] == parent_id
    asked = ask_population(study, study.sampler, "prelu", 2, spec)  # the sampler accepts them
    assert [a.number for a in asked] == [3, 4]


def test_warm_start_needs_an_existing_compatible_parent(db: Any) -> None:
    url, sessions = db
    parent_id, _ = _parent_with_trials(url, sessions)
    with pytest.raises(NotFound, match="search 42"), sessions.begin() as session:
        create_search(session=session, spec=parse_spec({**PARENT, "warm_start_from": 42}),
                      storage_url=url)
    other = {**PARENT, "families": ["relu", "gelu"], "architecture": "mlp:16",
             "warm_start_from": parent_id}
    with pytest.raises(InvalidInput) as err, sessions.begin() as session:
        create_search(session=session, spec=parse_spec(other), storage_url=url)
    assert "families" in err.value.detail and "architecture" in err.value.detail
    with sessions() as session:
        assert repo.count_searches(session) == 1  # nothing half-made
    assert len(optuna.get_all_study_names(url)) == 1


# --------------------------------------------------------------------------- schedulers


def test_the_celery_task_enqueues_what_tick_created(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker import schedule_tasks, tasks

    url, sessions = db
    _make(sessions, cron="* * * * * *", now=datetime.now(timezone.utc) - timedelta(seconds=5))
    res = tasks._Resources(sessions, url, None, "cpu")  # type: ignore[arg-type]
    monkeypatch.setattr(schedule_tasks, "resources", lambda: res)
    sent: list[int] = []
    monkeypatch.setattr("worker.enqueue.submit_search", lambda sid: sent.append(sid) or "t")
    out = schedule_tasks.tick_schedules_task.run()
    assert out["created"] == out["enqueued"] == sent and len(sent) == 1
    assert schedule_tasks.beat_entry(5.0)["task"] == "schedules.tick"


def test_the_embedded_runner_ticks_at_its_interval(db: Any, tmp_path: Path) -> None:
    from search.coordinator.runner import Runner

    url, sessions = db
    _make(sessions, cron="* * * * * *", now=datetime.now(timezone.utc) - timedelta(seconds=5))
    runner = Runner(database_url=url, home=tmp_path, schedule_tick_s=3600)
    try:
        assert len(runner.tick_schedules()) == 1
        with sessions.begin() as session:  # due again, but the next tick is an hour away
            session.execute(update(ScheduleRow).values(
                next_run_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
        assert runner.tick_schedules() == []
        assert runner.next_search() is not None  # what the tick made is what it runs next
    finally:
        runner.close()
    with sessions() as session:
        assert repo.count_searches(session) == 1
        assert session.query(SearchRow).one().schedule_id is not None
