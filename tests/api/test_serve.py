"""`actsearch serve` for real: HTTP submit to completion, a runner crash, a shutdown mid-search."""

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

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# Long enough to be caught running (digits, 50 epochs x 40 trials), cut short by the test.
LONG_SPEC: dict[str, Any] = {"dataset": "digits", "architecture": "mlp:64", "trials": 40,
                             "epochs": 50, "families": ["relu", "prelu"]}


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


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client, Path]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTSEARCH_")}
    env.update(ACTSEARCH_HOME=str(tmp_path), ACTSEARCH_TORCH_THREADS="1", ACTSEARCH_WORKERS="1")
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([_actsearch(), "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "warning"], env=env, stdout=log, stderr=log)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        _wait("the API", lambda: client.get("/health").status_code == 200, timeout=60)
        yield proc, client, tmp_path
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
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

    # 2. the runner dies mid-search: serve restarts it and the search is failed, not stuck
    long_id = client.post("/searches", json=LONG_SPEC).json()["id"]
    _wait("the long search to start", lambda: _state(client, long_id)["state"] == "running")
    runners = _children(proc.pid, "search.runner")
    assert len(runners) == 1, runners
    os.kill(runners[0], signal.SIGKILL)
    failed = _wait("the crashed search to be failed",
                   lambda: _state(client, long_id)["state"] == "failed" and _state(client, long_id))
    assert "runner process ended" in failed["error"]
    # a new runner (serve may record the failure a moment before it has started one)
    _wait("a new runner", lambda: _children(proc.pid, "search.runner") not in ([], runners))

    # 3. SIGTERM while a search runs: both processes stop; the search is recorded as interrupted
    third = client.post("/searches", json=LONG_SPEC).json()["id"]
    _wait("the third search to start", lambda: _state(client, third)["state"] == "running")
    runner_pid = _children(proc.pid, "search.runner")[0]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) == 0
    assert not Path(f"/proc/{runner_pid}").exists() or \
        "zombie" in Path(f"/proc/{runner_pid}/status").read_text()
    engine = make_engine(f"sqlite:///{home / 'actsearch.db'}")
    with session_factory(engine)() as session:
        row = repo.get_search(session, search_id=third)
        assert row.state == "failed" and "shut down" in (row.error or ""), row.error
        assert repo.get_search(session, search_id=sid).state == "complete"
    engine.dispose()
