"""The equal-compute control arm on the dashboard: the form's checkbox, the control row, the verdict."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from tests.browser.conftest import shot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


def test_a_control_search_shows_the_control_row_and_the_verdict(page: Any, server: str) -> None:
    page.goto(f"{server}/ui/new")
    page.wait_for_selector("#f-control")
    page.fill("#f-architecture", "mlp:8")
    page.check("#fam-prelu")
    page.fill("#f-trials", "4")
    page.fill("#f-epochs", "3")
    page.fill("#f-name", "iris with control")
    page.check("#f-control")
    page.click("#submit-btn")
    page.wait_for_url(re.compile(r"/ui/searches/\d+$"))
    sid = int(page.url.rstrip("/").rsplit("/", 1)[1])
    assert httpx.get(f"{server}/searches/{sid}").json()["spec"]["control"] == "relu"
    deadline = time.monotonic() + 240
    while (state := httpx.get(f"{server}/searches/{sid}").json()["state"]) not in (
            "complete", "failed", "cancelled"):
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    assert state == "complete"
    page.reload()
    page.wait_for_selector("#leaderboard-table tr.control")
    row = page.inner_text("#leaderboard-table tr.control")
    assert "relu" in row and "control" in row and "±" in row
    verdict = page.inner_text("#control-verdict")
    assert verdict.startswith("searching activations ") and "candidate-epochs" in verdict
    assert "Control (ReLU alone)" in page.inner_text("#search-meta")
    # the control's trials are filterable by their phase
    page.select_option("#t-phase", "control")
    phases = page.eval_on_selector_all("#trials-table tbody tr", "rs => rs.length")
    assert phases > 0
    shot(page, "search-control")
