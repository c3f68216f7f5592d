"""Requests from other origins and for other host names are refused before any route runs.

With auth off (the embedded default) the API trusts whoever can reach it, and a web
page on any other site can reach ``127.0.0.1`` through the visitor's browser: a
``fetch(url, {method: "POST", mode: "no-cors"})`` needs no CORS permission to *send*
a request, so it could cancel a search, plant a dataset or pause a schedule. And a
DNS-rebinding page (``evil.example`` re-pointed at 127.0.0.1) is same-origin to the
browser, so it could even read the answers.

Two checks, in a pure ASGI middleware so they hold for every route:

* ``Host`` must be one of the names this service is served under (localhost,
  127.0.0.1, [::1], the bound host, ``ACTSEARCH_HTTP__ALLOWED_HOSTS``): a rebinding
  page sends its own name and gets 400.
* A state-changing request (POST, PUT, PATCH, DELETE) from a browser must come from
  the service's own origin (or ``ACTSEARCH_HTTP__ALLOWED_ORIGINS``): its ``Origin``
  header, or without one ``Sec-Fetch-Site`` or ``Referer``, decides; foreign gets 403.
  Clients that are not browsers send none of these (curl, httpx, the CLI) and pass.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Collection, Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from core.settings import HttpSettings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARDS = ("0.0.0.0", "::", "")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _split_host(value: str, default_port: int | None = None) -> tuple[str, int | None]:
    """``"Example.org:8000"`` -> ``("example.org", 8000)``; ``"[::1]:80"`` -> ``("::1", 80)``."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        name, _, port_text = value.partition(":")
    else:  # a bare name, or a bare IPv6 address
        name, port_text = value, ""
    port = int(port_text) if port_text.isdigit() else default_port
    return name.rstrip("."), port


def served_hosts(http: HttpSettings) -> set[str]:
    """The host names requests may carry: loopback, the bound host and the configured ones.

    Bound to every interface (0.0.0.0 or ::), the machine's own names and addresses are
    added too; a DNS name clients use for it (api.example.org) must be configured.
    """
    names = set(LOOPBACK_NAMES)
    names.update(_split_host(h)[0] for h in http.allowed_hosts)
    bound = (http.bound_host or "").strip().lower().strip("[]")
    if bound in _WILDCARDS:
        if http.bound_host is not None:
            names.update(_machine_names())
    else:
        names.add(bound)
    return names


def _machine_names() -> Iterable[str]:
    try:
        hostname = socket.gethostname()
        yield hostname.lower()
        yield socket.getfqdn().lower()
        for info in socket.getaddrinfo(hostname, None):
            yield str(info[4][0]).lower()
    except OSError:
        return


class OriginGuardMiddleware:
    """400 for a ``Host`` this service does not serve, 403 for a cross-origin write."""

    def __init__(self, app: ASGIApp, *, hosts: Collection[str],
                 origins: Collection[str] = ()) -> None:
        self.app = app
        self.any_host = "*" in hosts
        self.hosts = {h.lower() for h in hosts}
        self.origins = {o.strip().lower().rstrip("/") for o in origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        host = headers.get("host")
        if host is not None and not self.any_host and _split_host(host)[0] not in self.hosts:
            await _refuse(send, 400, (
                f"this service does not answer to the host name {host[:100]!r} (it serves "
                f"{', '.join(sorted(self.hosts))}); requests for other names are refused so "
                "that a DNS-rebinding web page cannot reach it. Add the name to "
                "ACTSEARCH_HTTP__ALLOWED_HOSTS (a JSON list) if clients really use it"))
            return
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            foreign = self._foreign_origin(headers, scope.get("scheme", "http"))
            if foreign is not None:
                await _refuse(send, 403, (
                    f"{scope['method']} {scope['path'][:100]} came from {foreign[:100]}, "
                    "another origin than this service's own: a web page on another site may "
                    "not change anything here. Use the dashboard served by this service, a "
                    "client that is not a browser (curl, the actsearch CLI), or list the "
                    "origin in ACTSEARCH_HTTP__ALLOWED_ORIGINS"))
                return
        await self.app(scope, receive, send)

    def _foreign_origin(self, headers: dict[str, str], scheme: str) -> str | None:
        """What makes this request cross-origin (for the message), or None if it is not."""
        host = headers.get("host", "")
        origin = headers.get("origin")
        if origin is None:
            site = headers.get("sec-fetch-site", "").lower()
            if site in ("cross-site", "same-site"):  # same-site: another port of this host
                return f"a page on another site (Sec-Fetch-Site: {site})"
            referer = headers.get("referer")
            if not referer:
                return None  # not a browser, or one that sent nothing: a direct request
            parts = urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme else referer
        if origin.strip().lower().rstrip("/") in self.origins:
            return None
        parts = urlsplit(origin.strip())
        if not parts.scheme or not parts.netloc:
            return f"origin {origin!r}"
        want = _split_host(host, _DEFAULT_PORTS.get(scheme))
        got = _split_host(parts.netloc, _DEFAULT_PORTS.get(parts.scheme.lower()))
        if parts.scheme.lower() == scheme and got == want:
            return None
        return f"origin {origin!r}"


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
