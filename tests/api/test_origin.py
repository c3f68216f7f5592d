"""Cross-site requests cannot change anything; other host names are not served.

With auth off a page on any site could, through its visitor's browser, cancel a
search (``fetch(..., {method: "POST", mode: "no-cors"})``), plant a dataset with a
multipart form or pause a schedule, and a DNS-rebinding page could read everything.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.origin import served_hosts
from core.settings import HttpSettings
from store.db import init_db
from tests.api.conftest import make_settings
from tests.utils.data_files import csv_bytes, make_frame

FOREIGN = "http://evil.example"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(Path(tmp_path_factory.mktemp("origin")))
    settings.http.allowed_origins = ["http://ui.example.org"]
    init_db(settings.resolved_database_url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


WRITES = [("POST", "/searches/1/cancel"), ("POST", "/schedules/1/pause"),
          ("DELETE", "/schedules/1"), ("POST", "/searches"), ("POST", "/datasets/builtin")]


@pytest.mark.parametrize(("method", "path"), WRITES)
@pytest.mark.parametrize("headers", [
    {"Origin": FOREIGN},
    {"Origin": "null"},  # a sandboxed iframe or a file:// page
    {"Origin": "http://testserver:9000"},  # same host, another port: another origin
    {"Origin": "https://testserver"},  # another scheme
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Referer": f"{FOREIGN}/page.html"},
], ids=["origin", "null", "other-port", "other-scheme", "fetch-cross-site", "fetch-same-site",
        "referer"])
def test_a_foreign_write_is_refused(client: TestClient, method: str, path: str,
                                    headers: dict[str, str]) -> None:
    r = client.request(method, path, headers=headers, json={"builtin": "iris"})
    assert r.status_code == 403, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert "another origin" in detail and "ACTSEARCH_HTTP__ALLOWED_ORIGINS" in detail


def test_a_planted_multipart_dataset_is_refused_and_nothing_is_stored(client: TestClient) -> None:
    before = client.get("/datasets").json()["count"]
    r = client.post("/datasets", files={"file": ("x.csv", csv_bytes(make_frame()))},
                    headers={"Origin": FOREIGN})
    assert r.status_code == 403
    assert client.get("/datasets").json()["count"] == before


@pytest.mark.parametrize("headers", [
    {},  # curl, httpx, the CLI: no browser headers at all
    {"Origin": "http://testserver"},  # the dashboard's own pages
    {"Sec-Fetch-Site": "same-origin"},
    {"Sec-Fetch-Site": "none"},  # typed in the address bar
    {"Referer": "http://testserver/ui/searches/1"},
    {"Origin": "http://ui.example.org"},  # ACTSEARCH_HTTP__ALLOWED_ORIGINS
], ids=["no-headers", "same-origin", "fetch-same-origin", "fetch-none", "same-referer",
        "allowed-origin"])
def test_same_origin_and_non_browser_writes_pass(client: TestClient,
                                                 headers: dict[str, str]) -> None:
    r = client.post("/searches/999/cancel", headers=headers)
    assert r.status_code == 404, r.text  # past the guard: the search does not exist


def test_reads_from_another_origin_are_not_refused(client: TestClient) -> None:
    """The browser's same-origin policy keeps a foreign page from reading the answer."""
    assert client.get("/searches", headers={"Origin": FOREIGN}).status_code == 200


@pytest.mark.parametrize("host", ["rebind.example", "rebind.example:8000", "127.0.0.2",
                                  "[::2]:8000", "localhost.evil.example"])
def test_a_host_name_not_served_is_refused(client: TestClient, host: str) -> None:
    r = client.get("/searches", headers={"Host": host})
    assert r.status_code == 400, r.text
    assert "ACTSEARCH_HTTP__ALLOWED_HOSTS" in r.json()["detail"]


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST"])
def test_loopback_names_are_served(client: TestClient, host: str) -> None:
    assert client.get("/health", headers={"Host": host}).status_code == 200


def test_served_hosts() -> None:
    assert served_hosts(HttpSettings()) == {"localhost", "127.0.0.1", "::1"}
    assert "api.example.org" in served_hosts(HttpSettings(allowed_hosts=["api.example.org:443"]))
    assert "10.1.2.3" in served_hosts(HttpSettings(bound_host="10.1.2.3"))
    assert "::1" in served_hosts(HttpSettings(bound_host="[::1]"))
    # bound to every interface: the machine's own name is one it is reached by
    assert socket.gethostname().lower() in served_hosts(HttpSettings(bound_host="0.0.0.0"))
