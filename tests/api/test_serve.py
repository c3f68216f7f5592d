"""`actsearch serve` for real: HTTP submit to completion; a runner crash, a SIGKILL of serve and a
shutdown mid-search, each resumed to the end with every planned trial accounted for once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from store import repo
from store.db import make_engine, session_factory
from tests.api.conftest import TINY_SPEC
from tests.utils.accounting import accounted_once

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# Long enough to be caught running (8 populations of 2 x 40 epochs), short enough to resume
# to the end in a test; no pruner, so every trial trains all its epochs.
LONG_SPEC: dict[str, Any] = {"dataset": "digits", "architecture": "mlp:32", "trials": 16,
                             "epochs": 40, "families": ["relu", "prelu"], "population_size": 2,
                             "pruner": "none", "finalist_seeds": 2}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _actsearch() -> str:
    script = Path(sys.executable).with_name("actsearch")
    return str(script) if script.exists() else "actsearch"


def _wait(what: str, check: Callable[[], Any], timeout: float = 120.0, every: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def _children(pid: int, needle: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and needle in cmd:
            found.append(int(entry.name))
    return found


def _start_serve(home: Path) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTSEARCH_")}
    env.update(ACTSEARCH_HOME=str(home), ACTSEARCH_TORCH_THREADS="1", ACTSEARCH_WORKERS="1")
    log = (home / "serve.log").open("ab")
    proc = subprocess.Popen([_actsearch(), "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "warning"], env=env, stdout=log, stderr=log)
    log.close()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    _wait("the API", lambda: client.get("/health").status_code == 200, timeout=60)
    return proc, client


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client, Path]]:
    proc, client = _start_serve(tmp_path)
    try:
        yield proc, client, tmp_path
    finally:
        client.close()
        _stop(proc)
        if os.environ.get("ACTSEARCH_TEST_SHOW_LOGS"):
            print((tmp_path / "serve.log").read_text())


def _state(client: httpx.Client, search_id: int) -> dict[str, Any]:
    return client.get(f"/searches/{search_id}").json()


def test_serve_runs_a_search_survives_a_runner_crash_and_shuts_down_cleanly(served) -> None:
    proc, client, home = served
    health = client.get("/health").json()
    assert health["mode"] == "embedded" and health["database"]["ok"]

    # 1. a search submitted over HTTP runs to completion in the embedded runner
    r = client.post("/searches", json=TINY_SPEC)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    done = _wait("the tiny search", lambda: _state(client, sid)["state"] in
                 ("complete", "failed", "cancelled") and _state(client, sid))
    assert done["state"] == "complete", done
    assert done["progress"]["done"] == 4 and done["progress"]["finalists_done"] == 2
    board = client.get(f"/searches/{sid}/leaderboard").json()
    assert board["winner"] in ("relu", "prelu") and len(board["rows"]) == 2
    assert [r["family"] for r in board["rows"] if r["baseline"]] == ["relu"]
    assert client.get(f"/searches/{sid}/export").headers["content-type"] == "application/zip"

    # 2. the runner dies mid-search: serve restarts it, and the new runner resumes the search
    long_id = client.post("/searches", json=LONG_SPEC).json()["id"]
    _wait("the long search to train", lambda: _state(client, long_id)["progress"]["done"] >= 2)
    runners = _children(proc.pid, "search.coordinator.runner")
    assert len(runners) == 1, runners
    os.kill(runners[0], signal.SIGKILL)
    _wait("a new runner", lambda: _children(proc.pid, "search.coordinator.runner") not in ([], runners))
    done = _wait("the resumed search", lambda: _state(client, long_id)["state"] in
                 ("complete", "failed") and _state(client, long_id), timeout=240)
    assert done["state"] == "complete", done
    assert accounted_once(home, long_id) == {"relu": 8, "prelu": 8}

    # 3. SIGTERM while a search runs: serve and its runner stop; the search is interrupted
    third = client.post("/searches", json=LONG_SPEC).json()["id"]
    _wait("the third search to train", lambda: _state(client, third)["progress"]["done"] >= 2)
    runner_pid = _children(proc.pid, "search.coordinator.runner")[0]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) == 0
    assert not Path(f"/proc/{runner_pid}").exists() or \
        "zombie" in Path(f"/proc/{runner_pid}/status").read_text()
    engine = make_engine(f"sqlite:///{home / 'actsearch.db'}")
    with session_factory(engine)() as session:
        assert repo.get_search(session, search_id=third).state == "interrupted"
        assert repo.get_search(session, search_id=sid).state == "complete"
    engine.dispose()


def test_a_search_survives_a_sigkill_of_serve_and_resumes_at_the_next_start(tmp_path: Path) -> None:
    proc, client = _start_serve(tmp_path)
    try:
        sid = client.post("/searches", json=LONG_SPEC).json()["id"]
        _wait("the search to train", lambda: _state(client, sid)["progress"]["done"] >= 2)
        proc.kill()  # no clean-up at all; its runner gets SIGTERM from the kernel (PDEATHSIG)
        proc.wait(timeout=10)
        client.close()
        _wait("the runner to stop", lambda: not _children(1, "search.coordinator.runner") and
              all(not p for p in [_children(proc.pid, "search.coordinator.runner")]), timeout=60)
        proc, client = _start_serve(tmp_path)  # the next start resumes it
        done = _wait("the resumed search", lambda: _state(client, sid)["state"] in
                     ("complete", "failed") and _state(client, sid), timeout=240)
        assert done["state"] == "complete", done
        assert done["progress"]["done"] == 16
        assert accounted_once(tmp_path, sid) == {"relu": 8, "prelu": 8}
    finally:
        client.close()
        _stop(proc)
