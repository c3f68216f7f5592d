"""A page on another origin cannot change anything through its visitor's browser.

The attacker's page is served from a second loopback port (another origin to the
browser, as any other site would be) and fires what needs no CORS permission to
send: a ``no-cors`` POST cancelling a running search and a multipart POST planting
a dataset. The search must still be running (or queued), unchanged, and no dataset
added. Then the same cancel sent from the dashboard's own origin works, which shows
the attack would have succeeded without the guard.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.utils.live_server import free_port

pytestmark = pytest.mark.browser

LONG_SPEC: dict[str, Any] = {"dataset": "digits", "architecture": "mlp:64", "trials": 40,
                             "epochs": 50, "families": ["relu", "prelu"],
                             "name": "cross-origin target"}

ATTACK = """<!doctype html><html><head><title>win a prize</title></head><body><script>
const api = "{api}";
const form = new FormData();
form.append("file", new Blob(["f0,label\\n" + "1,0\\n2,1\\n".repeat(30)], {{type: "text/csv"}}),
            "planted.csv");
form.append("name", "planted");
Promise.allSettled([
  fetch(api + "/searches/{search_id}/cancel", {{method: "POST", mode: "no-cors"}}),
  fetch(api + "/datasets", {{method: "POST", mode: "no-cors", body: form}}),
]).then(() => {{ document.title = "sent"; }});
</script></body></html>"""


@pytest.fixture
def attacker_site(server: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """An HTTP server on another loopback port serving the attack page (filled in later)."""
    page: dict[str, Any] = {"html": ""}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = page["html"].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", page
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_page_on_another_origin_cannot_cancel_a_search_or_plant_a_dataset(
        page: Any, server: str, attacker_site: tuple[str, dict[str, Any]]) -> None:
    created = httpx.post(f"{server}/searches", json=LONG_SPEC, timeout=60)
    assert created.status_code == 201, created.text
    search_id = created.json()["id"]
    datasets = httpx.get(f"{server}/datasets", timeout=30).json()["count"]
    evil_url, evil_page = attacker_site
    evil_page["html"] = ATTACK.format(api=server, search_id=search_id)
    try:
        page.goto(evil_url)
        page.wait_for_function("document.title === 'sent'", timeout=20_000)
        after = httpx.get(f"{server}/searches/{search_id}", timeout=30).json()
        assert after["state"] in ("pending", "running"), after["state"]
        assert after["spec"] == created.json()["spec"]
        assert httpx.get(f"{server}/datasets", timeout=30).json()["count"] == datasets
        assert httpx.get(f"{server}/datasets", params={"name": "planted"},
                         timeout=30).json()["count"] == 0
        # Control: the same request from the service's own origin goes through.
        page.goto(f"{server}/")
        status = page.evaluate(
            "async (url) => (await fetch(url, {method: 'POST'})).status",
            f"{server}/searches/{search_id}/cancel")
        assert status == 200
        assert httpx.get(f"{server}/searches/{search_id}",
                         timeout=30).json()["state"] == "cancelled"
    finally:  # never leave the shared runner busy with this long search
        httpx.post(f"{server}/searches/{search_id}/cancel", timeout=30)
