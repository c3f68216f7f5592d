"""A real ``actsearch serve`` process for tests: free loopback port, its own home, clean teardown."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    proc: subprocess.Popen[bytes]
    home: Path
    env: dict[str, str]

    @property
    def log(self) -> str:
        try:
            return (self.home / "serve.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@contextlib.contextmanager
def live_server(home: Path, extra_env: Mapping[str, str] | None = None,
                start_timeout_s: float = 60) -> Iterator[LiveServer]:
    """Embedded ``actsearch serve`` (API, dashboard, runner); yields once /health answers."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("ACTSEARCH_DATABASE_URL", "ACTSEARCH_BROKER_URL", "ACTSEARCH_ARTIFACT_DIR")}
    env.update({"ACTSEARCH_HOME": str(home), "OMP_NUM_THREADS": "1", **(extra_env or {})})
    port = free_port()
    with (home / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "actsearch"), "serve", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    server = LiveServer(f"http://127.0.0.1:{port}", proc, home, env)
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"actsearch serve exited:\n{server.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"actsearch serve not up within {start_timeout_s:.0f} s:\n"
                                     f"{server.log}")
            time.sleep(0.3)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
