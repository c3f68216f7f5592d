"""Warm trainers (search/coordinator/trainers.py): the bounded dataset caches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.engine import TensorData
from models.spec import ArchSpec, Candidate, TrainConfig
from search.coordinator.child import PopulationJob
from search.coordinator.trainers import TrainerPool, tensor_nbytes


def _data(rows: int, seed: int) -> TensorData:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    return TensorData(X_train=X, y_train=y, X_val=X[:16], y_val=y[:16], task="classification",
                      n_outputs=2)


def _train(child: Any, key: str) -> tuple[str, Any]:
    """Send one tiny population on ``key`` straight down the child's pipe; its answer."""
    job = PopulationJob(ArchSpec.parse("mlp:4").to_dict(), "relu",
                        [Candidate(seed=0, lr=1e-2)],
                        TrainConfig(epochs=1, batch_size=16, record_epochs=0), data_key=key)
    child.conn.send(("train", job))
    while True:
        kind, payload = child.conn.recv()
        if kind != "epoch":
            return kind, payload
        child.conn.send(("stop", []))


def test_a_trainer_holds_datasets_within_its_bound_and_drops_the_least_recent() -> None:
    """The parent mirrors what the child holds: past the bound the least recently used
    dataset is dropped in the child too (training on it then fails: it must be resent),
    and a dataset already held is never sent again."""
    a, b, c = _data(64, 0), _data(64, 1), _data(64, 2)
    size = tensor_nbytes(a)
    with TrainerPool(1, threads=1) as pool:
        child = pool.ensure()[0]
        child.cache_bytes = 2 * size  # room for two
        assert child.ensure_data("a", a) and child.ensure_data("b", b)
        assert not child.ensure_data("a", a)  # held: nothing sent; "a" is now the most recent
        assert child.ensure_data("c", c)  # over the bound: "b" goes
        assert list(child.held) == ["a", "c"]
        assert pool.stats.data_sent == 3 and pool.stats.data_dropped == 1
        kind, result = _train(child, "c")
        assert kind == "result" and result.candidates[0].status == "complete"
        kind, error = _train(child, "b")
        assert kind == "error" and "'b'" in error
        big = _data(512, 3)  # alone above the bound: kept (it is needed now), the rest go
        assert child.ensure_data("big", big) and list(child.held) == ["big"]
        assert _train(child, "big")[0] == "result"
        assert child.pid == pool.pids()[0] and pool.stats.started == 1


def test_the_per_process_data_cache_is_bounded_by_bytes(tmp_path: Path) -> None:
    """A Celery worker's child keeps prepared splits across tasks, within the byte bound."""
    from search.coordinator.data import cached_keys, clear_caches, prepared_data
    from search.service import create_search
    from search.spec import parse_spec
    from store.db import init_db, make_engine, session_factory

    url = f"sqlite:///{tmp_path / 'actsearch.db'}"
    init_db(url)
    sessions = session_factory(make_engine(url))
    specs = {}
    for name in ("iris", "wine"):
        spec = parse_spec({"dataset": name, "architecture": "mlp:4", "trials": 2})
        with sessions.begin() as session:  # one transaction each (Optuna writes beside it)
            row = create_search(session=session, spec=spec, storage_url=url)
            specs[name] = (row.dataset_id, spec)
    clear_caches()
    try:
        iris = prepared_data(sessions, dataset_id=specs["iris"][0], spec=specs["iris"][1])
        assert prepared_data(sessions, dataset_id=specs["iris"][0],
                             spec=specs["iris"][1]) is iris  # a hit: same object
        wine = prepared_data(sessions, dataset_id=specs["wine"][0], spec=specs["wine"][1],
                             cache_bytes=iris.nbytes + 1)
        assert [k[1] for k in cached_keys()] == [specs["wine"][0]]  # iris dropped for wine
        assert wine.key and wine.key != iris.key and wine.key.endswith(
            f":{specs['wine'][0]}:{specs['wine'][1].seed}:"
            f"{specs['wine'][1].val_fraction}:{specs['wine'][1].test_fraction}")
    finally:
        clear_caches()


@pytest.mark.parametrize("device", [None, "cpu"])
def test_prepared_data_on_cpu_is_the_host_arrays(tmp_path: Path, device: str | None) -> None:
    from search.datasets import load_builtin, split_dataset
    from search.service import PreparedData

    ds = load_builtin("iris")
    data = PreparedData(dataset=ds, splits=split_dataset(ds, seed=0))
    assert data.tensor_data(device).X_train is data.splits.X_train


def test_the_coordinator_reaches_its_first_population_without_the_slow_libraries() -> None:
    """What ``actsearch search``'s coordinator imports before its first epoch (CLI, spec,
    service, the embedded coordinator, its planner) loads none of torch, scipy,
    scikit-learn or pandas: its training child imports torch meanwhile."""
    import subprocess
    import sys

    from models.catalogue import write_snapshot

    write_snapshot()  # what the first process after an edit of the families writes
    code = ("import sys, actsearch.cli, search.spec, search.service, store.db, "
            "search.coordinator.local, search.coordinator.planner, search.coordinator.trainers; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'scipy', 'sklearn', 'pandas'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[2], check=True)
    assert out.stdout.strip() == "[]", out.stderr
