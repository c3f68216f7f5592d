"""Browser fixtures: a live ``actsearch serve`` and Debian's Chromium driven by Playwright.

Playwright comes from PyPI (the ``dev`` extra); its own browser download
(``playwright install``) is never used: the tests launch ``/usr/bin/chromium``
through ``executable_path``. Without either, every browser test is skipped with
the reason. Screenshots go to ``artifacts/screenshots/`` at the repository root.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.utils.live_server import live_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
BIN = Path(sys.executable).parent

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None


def _skip_reason() -> str | None:
    if sync_playwright is None:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``actsearch serve`` (API, dashboard, embedded runner) on a free loopback port."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    with live_server(tmp_path_factory.mktemp("browser-serve")) as live:
        yield live.url


@pytest.fixture(scope="session")
def browser(server: str) -> Iterator[Browser]:
    assert sync_playwright is not None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class PageErrors(list[str]):
    """JavaScript errors and failed requests a page reported."""


def _is_error(message: Any) -> bool:
    """A console error, except the browser's note on a 4xx answer (the form's 422s are expected)."""
    if message.type != "error":
        return False
    return not re.search(r"Failed to load resource: .*status of 4\d\d", message.text)


@pytest.fixture
def page(browser: Browser) -> Iterator[Any]:
    """A laptop-sized page; the test fails if the page threw a JavaScript error."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    pg: Page = context.new_page()
    pg.set_default_timeout(20_000)
    errors = PageErrors()
    pg.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    pg.on("console", lambda m: errors.append(f"console: {m.text}") if _is_error(m) else None)
    pg.errors = errors  # type: ignore[attr-defined]
    yield pg
    context.close()
    assert not errors, errors


def shot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot as artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 5_000
    return path
