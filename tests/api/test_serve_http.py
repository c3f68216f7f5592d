"""``actsearch serve`` at the socket: slow and half-sent requests time out, foreign hosts
and origins are refused.

A real server on a loopback port, with short timeouts so the test waits seconds: the
read timeout (headers within it, no body gap longer) and uvicorn's keep-alive timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.utils.servers import free_port, start_service, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

READ_TIMEOUT_S = 2.0
KEEP_ALIVE_S = 1.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    home = tmp_path_factory.mktemp("serve-http")
    port = free_port()
    env = {"ACTSEARCH_HOME": str(home), "ACTSEARCH_HTTP__REQUEST_READ_TIMEOUT_S":
           str(READ_TIMEOUT_S), "ACTSEARCH_HTTP__TIMEOUT_KEEP_ALIVE_S": str(KEEP_ALIVE_S)}
    proc = start_service("serve", ["serve", "--host", "127.0.0.1", "--port", str(port),
                                   "--log-level", "warning"], env, home / "logs",
                         inherit_actsearch_env=False)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, 90), \
            proc.tail()
        yield "127.0.0.1", port
    finally:
        os.killpg(proc.proc.pid, signal.SIGTERM)
        try:
            proc.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()


def _closed_after(sock: socket.socket, limit_s: float) -> float:
    """Seconds until the server closes ``sock`` (reads until EOF), failing past ``limit_s``."""
    sock.settimeout(limit_s)
    start = time.monotonic()
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for more than {limit_s} s")
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def test_half_sent_headers_are_closed_within_the_read_timeout(served: tuple[str, int]) -> None:
    with socket.create_connection(served) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line
        waited = _closed_after(sock, READ_TIMEOUT_S + 5)
    assert READ_TIMEOUT_S - 0.5 < waited < READ_TIMEOUT_S + 3


def test_trickled_headers_do_not_reset_the_deadline(served: tuple[str, int]) -> None:
    with socket.create_connection(served) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        closed = False
        for _ in range(20):  # a header line every 0.5 s: the deadline is not pushed back
            time.sleep(0.5)
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        if not closed:
            _closed_after(sock, 5)
        assert time.monotonic() - start < READ_TIMEOUT_S + 4


def test_a_stalled_body_is_closed(served: tuple[str, int]) -> None:
    with socket.create_connection(served) as sock:
        sock.sendall(b"POST /searches HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"data")
        waited = _closed_after(sock, READ_TIMEOUT_S + 5)
    assert waited < READ_TIMEOUT_S + 3


def test_an_idle_keep_alive_connection_is_closed(served: tuple[str, int]) -> None:
    with socket.create_connection(served) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(10)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        waited = _closed_after(sock, KEEP_ALIVE_S + 5)
    assert waited < KEEP_ALIVE_S + 3


def test_a_complete_request_still_gets_its_answer(served: tuple[str, int]) -> None:
    """Control: the timeouts cut only slow clients; a normal one is answered, twice."""
    host, port = served
    with httpx.Client(base_url=f"http://{host}:{port}") as client:
        assert client.get("/health").status_code == 200
        assert client.get("/activations").status_code == 200


def test_a_foreign_host_name_is_refused(served: tuple[str, int]) -> None:
    host, port = served
    r = httpx.get(f"http://{host}:{port}/searches", headers={"Host": f"rebind.example:{port}"})
    assert r.status_code == 400
    assert "ACTSEARCH_HTTP__ALLOWED_HOSTS" in r.json()["detail"]
    assert httpx.get(f"http://localhost:{port}/health").status_code == 200


def test_a_cross_origin_write_is_refused_and_a_direct_one_is_not(served: tuple[str, int]) -> None:
    host, port = served
    url = f"http://{host}:{port}"
    r = httpx.post(f"{url}/searches/1/cancel", headers={"Origin": "http://127.0.0.1:9"})
    assert r.status_code == 403 and "another origin" in r.json()["detail"]
    # curl, httpx and the CLI send no Origin: a 404 (no such search) means it got through
    assert httpx.post(f"{url}/searches/1/cancel").status_code == 404
    assert httpx.post(f"{url}/searches/1/cancel",
                      headers={"Origin": url}).status_code == 404
