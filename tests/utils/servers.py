"""Throwaway local servers and worker processes for integration tests and benchmarks.

Starts Debian's ``redis-server`` and a private PostgreSQL cluster (``initdb``
into a temporary directory, run as the ``postgres`` user when we are root, as
PostgreSQL refuses to run as root), both on 127.0.0.1 and a free port, and
real ``actsearch worker`` / ``actsearch beat`` processes, each in its own
process group so a test can SIGKILL a whole worker (parent and children) and
teardown can always clean up. Nothing here is used in production.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "LocalPostgres",
    "LocalRedis",
    "ServiceProcess",
    "free_port",
    "missing_binaries",
    "pg_bin_dir",
    "start_postgres",
    "start_redis",
    "start_service",
    "wait_for",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.25) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passes; returns its last answer."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if predicate():
                return True
        except Exception:  # noqa: BLE001 - a server still starting answers with errors
            pass
        time.sleep(interval_s)
    return bool(predicate())


def pg_bin_dir() -> Path | None:
    """The directory of ``initdb``/``postgres`` (Debian keeps them off PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def missing_binaries() -> list[str]:
    """What the integration tier needs and this machine lacks (empty: all there)."""
    missing = []
    if shutil.which("redis-server") is None:
        missing.append("redis-server (apt-get install redis-server)")
    if pg_bin_dir() is None:
        missing.append("PostgreSQL's initdb/postgres (apt-get install postgresql)")
    return missing


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 15) -> None:
    """Signal a process group, wait, then SIGKILL what is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # children left behind by a dead parent, too
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@dataclass
class LocalRedis:
    """A redis-server without persistence on 127.0.0.1."""

    port: int
    proc: subprocess.Popen[bytes]
    root: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def flush(self) -> None:
        """Empty every queue (between tests)."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        try:
            client.flushall()
        finally:
            client.close()

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.root, ignore_errors=True)

    def halt(self) -> None:
        """Stop the server (SIGTERM), keeping its directory: :meth:`resume` restarts it."""
        _stop(self.proc)

    def resume(self, timeout_s: float = 20) -> None:
        """Start the server again on the same port (empty: no persistence, like a crash)."""
        self.proc = _launch_redis(self.root, self.port)
        _wait_redis(self, timeout_s)


def _launch_redis(root: Path, port: int) -> subprocess.Popen[bytes]:
    log = (root / "redis.log").open("ab")
    return subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(root), "--protected-mode", "yes"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def _wait_redis(server: LocalRedis, timeout_s: float) -> None:
    import redis

    def up() -> bool:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"redis-server exited: {(server.root / 'redis.log').read_text()[-2000:]}")
        return bool(redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=1).ping())

    if not wait_for(up, timeout_s):
        raise RuntimeError("redis-server did not answer PING")


def start_redis(timeout_s: float = 20) -> LocalRedis:
    """Start ``redis-server`` on a free loopback port (``--save ''``, no AOF)."""
    root = Path(tempfile.mkdtemp(prefix="actsearch-redis-"))
    port = free_port()
    server = LocalRedis(port, _launch_redis(root, port), root)
    try:
        _wait_redis(server, timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


@dataclass
class LocalPostgres:
    """A private PostgreSQL cluster on 127.0.0.1 (trust auth, fsync off: tests only)."""

    port: int
    proc: subprocess.Popen[bytes]
    root: Path
    database: str = "actsearch"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.database}"

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, exit now.
        _stop(self.proc, signal.SIGINT, timeout_s=20)
        shutil.rmtree(self.root, ignore_errors=True)

    def halt(self) -> None:
        """``pg_ctl stop -m fast``: every session rolled back and cut; the data stays."""
        _stop(self.proc, signal.SIGINT, timeout_s=20)

    def resume(self, timeout_s: float = 60) -> None:
        """Start the server again on the same data directory and port."""
        self.proc = _launch_postgres(self.root, self.port)
        _wait_postgres(self, timeout_s, create=False)


def _as_postgres() -> dict[str, object]:
    """Popen arguments that drop to the postgres user when we are root."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def start_postgres(timeout_s: float = 60) -> LocalPostgres:
    """initdb into a fresh temporary directory, start ``postgres``, create the database."""

    bindir = pg_bin_dir()
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries not found")
    # mkdtemp gives 0700 to its creator; the postgres user must own the tree.
    root = Path(tempfile.mkdtemp(prefix="actsearch-pg-"))
    data, sock = root / "data", root / "sock"
    data.mkdir()
    sock.mkdir()
    if os.geteuid() == 0:
        for path in (root, data, sock):
            shutil.chown(path, "postgres", "postgres")
    drop = _as_postgres()
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    init = subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
         "-E", "UTF8", "--no-sync", "--locale=C.UTF-8"],
        capture_output=True, env=env, cwd=str(root), **drop,  # type: ignore[call-overload]
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr.decode()[-2000:]}")
    port = free_port()
    server = LocalPostgres(port, _launch_postgres(root, port), root)
    try:
        _wait_postgres(server, timeout_s, create=True)
    except BaseException:
        server.stop()
        raise
    return server


def _launch_postgres(root: Path, port: int) -> subprocess.Popen[bytes]:
    bindir = pg_bin_dir()
    assert bindir is not None
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    log = root / "postgres.log"
    log_fh = log.open("ab")
    if os.geteuid() == 0:
        shutil.chown(log, "postgres", "postgres")
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        [str(bindir / "postgres"), "-D", str(root / "data"), "-p", str(port), "-k",
         str(root / "sock"), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
         "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
         "-c", "max_connections=200"],
        stdout=log_fh, stderr=subprocess.STDOUT, env=env, cwd=str(root),
        start_new_session=True, **_as_postgres(),
    )


def _wait_postgres(server: LocalPostgres, timeout_s: float, *, create: bool) -> None:
    import psycopg

    log = server.root / "postgres.log"

    def up() -> bool:
        if server.proc.poll() is not None:
            raise RuntimeError(f"postgres exited: {log.read_text()[-2000:]}")
        with psycopg.connect(host="127.0.0.1", port=server.port, user="postgres",
                             dbname="postgres", connect_timeout=2, autocommit=True) as conn:
            if create:
                conn.execute(f'CREATE DATABASE "{server.database}"')
        return True

    if not wait_for(up, timeout_s, interval_s=0.3):
        raise RuntimeError(f"PostgreSQL did not start: {log.read_text()[-2000:]}")


@dataclass
class ServiceProcess:
    """One ``actsearch worker``/``beat`` process group with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group at once: the parent and every prefork child, no cleanup."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def signal_stop(self) -> None:
        """Ask for a cold shutdown (SIGQUIT: no waiting for the running task); do not wait."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGQUIT)

    def stop(self) -> None:
        """Cold shutdown (SIGQUIT: no waiting for the running task), then SIGKILL."""
        _stop(self.proc, signal.SIGQUIT, timeout_s=10)

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def actsearch_command() -> list[str]:
    """How to run the ``actsearch`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("actsearch")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from actsearch.cli import main; main()"]


def start_service(name: str, args: list[str], env: Mapping[str, str], log_dir: Path, *,
                  inherit_actsearch_env: bool = True) -> ServiceProcess:
    """Start ``actsearch <args>`` in its own process group, output to ``log_dir/name.log``.

    ``env`` is laid over this process's environment; ``inherit_actsearch_env=False``
    drops this process's ACTSEARCH_* first (a session fixture's distributed settings
    must not turn an embedded service into a distributed one).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    fh = log.open("wb")
    base = {k: v for k, v in os.environ.items()
            if inherit_actsearch_env or not k.startswith("ACTSEARCH_")}
    proc = subprocess.Popen(
        [*actsearch_command(), *args], env={**base, **env}, stdout=fh,
        stderr=subprocess.STDOUT, start_new_session=True, cwd=str(log_dir),
    )
    fh.close()
    return ServiceProcess(name, proc, log)


@contextlib.contextmanager
def servers() -> Iterator[tuple[LocalRedis, LocalPostgres]]:
    """Redis and PostgreSQL for the duration of a ``with`` block."""
    redis_server = start_redis()
    try:
        pg = start_postgres()
        try:
            yield redis_server, pg
        finally:
            pg.stop()
    finally:
        redis_server.stop()
