"""``actsearch schedule ...``: local database, over HTTP, and a real ``actsearch serve`` firing one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.utils.cli import run_cli
from tests.utils.live_server import live_server

BIN = Path(sys.executable).parent


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from actsearch.cli import common
    from core.settings import get_settings

    monkeypatch.setenv("ACTSEARCH_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("ACTSEARCH_DATABASE_URL", raising=False)
    monkeypatch.delenv("ACTSEARCH_SERVER", raising=False)
    monkeypatch.setitem(common.remote, "client", None)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def actsearch(*args: str, monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    return run_cli(monkeypatch, capsys, *args)


def test_local_create_list_pause_resume_delete(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(*args: str) -> tuple[int, str, str]:
        return actsearch(*args, monkeypatch=monkeypatch, capsys=capsys)

    code, out, err = run("schedule", "create", "--name", "nightly", "--cron", "0 3 * * *",
                         "--dataset", "digits", "--arch", "mlp:16", "--trials", "8",
                         "--families", "relu,gelu", "--epochs", "3")
    assert code == 0, err
    assert "schedule 1 'nightly' created in the local database" in out and "next run" in out
    spec = home / "spec.yaml"
    spec.write_text("dataset: iris\narchitecture: mlp:8\ntrials: 4\n")
    code, out, err = run("schedule", "create", "--cron", "@hourly", "--spec", str(spec),
                         "--epochs", "2", "--json")
    assert code == 0, err
    made = json.loads(out)
    assert made["template"] == {"kind": "rerun", "spec": {
        "dataset": "iris", "architecture": "mlp:8", "trials": 4, "epochs": 2}}
    code, out, err = run("schedule", "list", "--json")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["rerun iris mlp:8", "nightly"]
    assert rows[1]["template"]["spec"]["families"] == ["relu", "gelu"]
    code, out, _ = run("schedule", "list")
    assert "nightly" in out and "0 3 * * *" in out
    assert run("schedule", "pause", "1")[1].strip() == "schedule 1 paused"
    code, out, _ = run("schedule", "list", "--state", "paused", "--json")
    assert [r["id"] for r in json.loads(out)] == [1]
    code, out, _ = run("schedule", "resume", "1")
    assert code == 0 and "schedule 1 active; next run" in out
    code, out, _ = run("schedule", "show", "1")
    assert code == 0 and "'nightly' active" in out
    assert run("schedule", "delete", "2")[1].strip() == "schedule 2 deleted"
    assert [r["id"] for r in json.loads(run("schedule", "list", "--json")[1])] == [1]


def test_local_add_trials_and_a_file_dataset(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from search.service import create_search
    from search.spec import parse_spec
    from store.db import init_db, make_engine, session_factory

    url = f"sqlite:///{home / 'actsearch.db'}"
    init_db(url)
    engine = make_engine(url)
    with session_factory(engine).begin() as session:
        parent = create_search(session=session, storage_url=url,
                               spec=parse_spec({"dataset": "iris", "architecture": "mlp:8"}))
        parent_id = parent.id
    engine.dispose()
    code, out, err = actsearch("schedule", "create", "--cron", "0 * * * *", "--add-trials", "16",
                               "--to", str(parent_id), "--json", monkeypatch=monkeypatch,
                               capsys=capsys)
    assert code == 0, err
    made = json.loads(out)
    assert made["template"] == {"kind": "add_trials", "search_id": parent_id, "trials": 16}
    monkeypatch.chdir(home)
    (home / "points.csv").write_text("a,b,kind\n" + "\n".join(
        f"{i},{i % 7},{'x' if i % 2 else 'y'}" for i in range(60)))
    code, out, err = actsearch("schedule", "create", "--cron", "0 * * * *", "--dataset",
                               "points.csv", "--label", "kind", "--json",
                               monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    # stored absolute: the runner that fires it may work in another directory
    assert json.loads(out)["template"]["spec"]["dataset"] == str(home / "points.csv")


@pytest.mark.parametrize(("args", "message"), [
    (["--cron", "0 3 * *", "--dataset", "digits"], "cron '0 3 * *' has 4 fields"),
    (["--cron", "0 3 * * *", "--dataset", "digits", "--timezone", "Nowhere/Land"], "Nowhere/Land"),
    (["--cron", "0 3 * * *"], "no dataset"),
    (["--cron", "0 3 * * *", "--dataset", "digits", "--families", "relu,swoosh"], "swoosh"),
    (["--cron", "0 3 * * *", "--dataset", "no_such_set"], "no_such_set"),
    (["--cron", "0 3 * * *", "--add-trials", "4"], "go together"),
    (["--cron", "0 3 * * *", "--add-trials", "4", "--to", "1", "--trials", "3"],
     "drop --trials"),
    (["--cron", "0 3 * * *", "--add-trials", "4", "--to", "77"], "search 77 not found"),
])
def test_bad_input_is_one_line_and_exit_2(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    args: list[str], message: str,
) -> None:
    code, _, err = actsearch("schedule", "create", *args, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and "Traceback" not in err
    assert message in err.replace("\n", " ")


@pytest.mark.parametrize("command", ["pause", "resume", "delete", "show"])
def test_unknown_ids_exit_2(home: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, _, err = actsearch("schedule", command, "9", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and "schedule 9 not found" in err


def test_over_http_with_server(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--server URL``: the same commands through the client (an in-process app here)."""
    from actsearch.client import ActsearchClient
    from api.main import create_app
    from store.db import init_db
    from tests.api.conftest import make_settings

    settings = make_settings(home / "service")
    init_db(settings.resolved_database_url)
    app = create_app(settings)

    def fake_init(self: ActsearchClient, base_url: str, **_: Any) -> None:
        self.base_url = base_url
        self.http = TestClient(app, base_url=base_url)

    monkeypatch.setattr(ActsearchClient, "__init__", fake_init)

    def run(*args: str) -> tuple[int, str, str]:
        return actsearch("--server", "http://svc", "schedule", *args, monkeypatch=monkeypatch,
                         capsys=capsys)

    code, out, err = run("create", "--cron", "*/10 * * * *", "--dataset", "iris", "--arch",
                         "mlp:8", "--trials", "2")
    assert code == 0, err
    assert "schedule 1 'rerun iris mlp:8' created on http://svc" in out
    assert [r["name"] for r in json.loads(run("list", "--json")[1])] == ["rerun iris mlp:8"]
    assert run("pause", "1")[1].strip() == "schedule 1 paused"
    assert "active" in run("resume", "1")[1]
    assert json.loads(run("show", "1", "--json")[1])["runs"] == []
    code, _, err = run("create", "--cron", "0 3 * * *", "--dataset", "../secret.csv")
    assert code == 2 and "file path" in err.replace("\n", " ")
    assert run("delete", "1")[1].strip() == "schedule 1 deleted"
    code, _, err = run("pause", "1")
    assert code == 2 and "schedule 1 not found (HTTP 404)" in err
    assert not (home / "actsearch.db").exists()  # nothing local


# --------------------------------------------------------------------------- real process


@pytest.mark.slow
def test_a_schedule_fires_in_a_real_serve_process(tmp_path: Path) -> None:
    """``actsearch serve`` with a 1 s tick: a 5-second cron creates a search that completes."""
    with live_server(tmp_path, {"ACTSEARCH_SCHEDULE_TICK_S": "1",
                                "ACTSEARCH_LIMITS__MIN_SCHEDULE_INTERVAL_S": "0"}) as live:
        url, env = live.url, live.env
        template = {"kind": "rerun", "spec": {
            "dataset": "iris", "architecture": "mlp:8", "families": ["relu"], "trials": 2,
            "epochs": 2, "finalist_seeds": 1}}
        created = httpx.post(f"{url}/schedules", json={
            "name": "every 5 s", "cron": "* * * * * */5", "template": template}, timeout=30)
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        deadline = time.monotonic() + 90
        done = None
        while done is None:
            assert time.monotonic() < deadline, (
                "no completed run within 90 s: "
                f"{httpx.get(f'{url}/schedules/{sid}').text[:800]}\n"
                f"{(tmp_path / 'serve.log').read_text()[-3000:]}")
            detail = httpx.get(f"{url}/schedules/{sid}", timeout=10).json()
            done = next((r for r in detail["runs"] if r["state"] == "complete"), None)
            time.sleep(0.5)
        assert detail["run_count"] >= 1 and detail["last_error"] is None
        search = httpx.get(f"{url}/searches/{done['id']}", timeout=10).json()
        assert search["best"]["family"] == "relu" and search["spec"]["dataset"] == "iris"
        pause = subprocess.run([str(BIN / "actsearch"), "--server", url, "schedule", "pause",
                                str(sid)], env=env, capture_output=True, text=True, timeout=60)
        assert pause.returncode == 0 and "paused" in pause.stdout, pause.stderr
        before = httpx.get(f"{url}/schedules/{sid}", timeout=10).json()
        time.sleep(7)  # more than one cron period plus a tick
        after = httpx.get(f"{url}/schedules/{sid}", timeout=10).json()
        assert after["state"] == "paused" and after["next_run_at"] is None
        assert after["run_count"] == before["run_count"]
        assert [r["id"] for r in after["runs"]] == [r["id"] for r in before["runs"]]
