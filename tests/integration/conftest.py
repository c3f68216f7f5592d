"""The distributed topology on one machine: real redis-server, PostgreSQL and worker processes.

* ``servers`` (session): Debian's ``redis-server`` (loopback, free port, no
  persistence) and a private PostgreSQL cluster (``initdb`` as the postgres
  user into a temporary directory); every test skips with the reason if the
  binaries are missing.
* ``distributed_env`` (session): the environment of a distributed deployment,
  applied to this process too (settings caches cleared on the way in and out).
* ``cluster`` (per test): starts real ``actsearch worker`` processes and one
  ``actsearch beat`` with a 2 s reconcile interval; teardown stops every process
  group it started, whatever the test did, and prints their logs' tails (shown
  by pytest when the test failed).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.utils.servers import (
    LocalPostgres,
    LocalRedis,
    ServiceProcess,
    missing_binaries,
    start_postgres,
    start_redis,
    start_service,
    wait_for,
)

# Short timings so a dead worker is noticed within seconds (defaults: 10/120/30 s).
HEARTBEAT_S = 1.0
STALE_AFTER_S = 8.0
RECONCILE_S = 2.0


@dataclass
class Servers:
    redis: LocalRedis
    postgres: LocalPostgres


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    missing = missing_binaries()
    if missing:
        pytest.skip("integration tier needs " + " and ".join(missing))
    redis_server = start_redis()
    try:
        pg = start_postgres()
    except BaseException:
        redis_server.stop()
        raise
    try:
        from store.db import init_db

        init_db(pg.url)
        yield Servers(redis_server, pg)
    finally:
        pg.stop()
        redis_server.stop()


def _clear_settings_caches() -> None:
    from core.settings import get_settings
    from search.coordinator import clear_caches
    from worker.app import get_app

    get_settings.cache_clear()
    get_app.cache_clear()
    clear_caches()


@pytest.fixture(scope="session")
def distributed_env(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """ACTSEARCH_* for workers, beat and this process: PostgreSQL, Redis, short timings."""
    home = tmp_path_factory.mktemp("distributed-home")
    env = {
        "ACTSEARCH_HOME": str(home),
        "ACTSEARCH_DATABASE_URL": servers.postgres.url,
        "ACTSEARCH_BROKER_URL": servers.redis.url,
        "ACTSEARCH_TORCH_THREADS": "1",
        "ACTSEARCH_WORKER__HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
        "ACTSEARCH_WORKER__STALE_AFTER_S": str(STALE_AFTER_S),
        "ACTSEARCH_WORKER__RECONCILE_INTERVAL_S": str(RECONCILE_S),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        _clear_settings_caches()
        try:
            yield env
        finally:
            _clear_settings_caches()
    _clear_settings_caches()  # after the environment is restored: later tests see their own


@pytest.fixture(scope="session")
def sessions(servers: Servers) -> Iterator[sessionmaker[Session]]:
    from store.db import make_engine, session_factory

    engine = make_engine(servers.postgres.url)
    yield session_factory(engine)
    engine.dispose()


@dataclass
class Cluster:
    """The worker and beat processes of one test."""

    env: dict[str, str]
    log_dir: Path
    workers: dict[str, ServiceProcess] = field(default_factory=dict)
    beat: ServiceProcess | None = None

    def start_worker(self, name: str, *extra: str) -> ServiceProcess:
        proc = start_service(name, ["worker", "--hostname", f"{name}@%h", "--loglevel", "info",
                                    *extra], self.env, self.log_dir)
        self.workers[name] = proc
        return proc

    def start_beat(self) -> ServiceProcess:
        self.beat = start_service(
            "beat", ["beat", "--schedule-file", str(self.log_dir / "beat-schedule")], self.env,
            self.log_dir)
        return self.beat

    def start(self, *workers: str) -> None:
        """Start these workers and beat, and wait until all of them are ready."""
        for name in workers:
            self.start_worker(name)
        self.start_beat()
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 90) -> None:
        """Every worker consuming (Celery logs 'ready.'), beat started."""
        for proc in self.processes():
            marker = " ready." if proc.name != "beat" else "beat: Starting"
            if not wait_for(lambda p=proc, m=marker: m in p.tail(200_000) or not p.alive,
                            timeout_s):
                raise AssertionError(f"{proc.name} not ready:\n{proc.tail()}")
            if not proc.alive:
                raise AssertionError(f"{proc.name} exited:\n{proc.tail()}")

    def processes(self) -> list[ServiceProcess]:
        return [*self.workers.values(), *([self.beat] if self.beat else [])]

    def logs(self) -> str:
        return "\n".join(f"----- {p.name} (alive={p.alive}) -----\n{p.tail()}"
                         for p in self.processes())

    def stop(self) -> None:
        """Signal every process group first, then wait: shutdowns overlap."""
        procs = self.processes()
        for proc in procs:
            proc.signal_stop()
        for proc in procs:
            proc.stop()


@pytest.fixture
def cluster(
    servers: Servers, distributed_env: dict[str, str], tmp_path: Path
) -> Iterator[Cluster]:
    """Start workers with ``cluster.start_worker(name)``; all are stopped at teardown."""
    servers.redis.flush()  # no message of an earlier test reaches these workers
    c = Cluster(dict(distributed_env), tmp_path / "logs")
    try:
        yield c
    finally:
        c.stop()
        print(c.logs())
