"""Session-wide: the test run ends by naming the tiers that did not run, and how to run them.

The integration and browser tiers skip themselves when Debian's redis-server,
PostgreSQL or Chromium are missing. Skips are listed one per test in ``-ra``'s
summary, which is easy to miss at the end of a green run; this hook adds one line
per tier that did not run, with the reason and the one command that installs what
it needs, so a fresh machine does not silently test less than CI does.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pytest

#: Test folders that are tiers of their own, and what they need.
TIERS = {
    "integration": "redis-server and PostgreSQL",
    "browser": "Chromium and Playwright",
    "load": "a real actsearch serve",
}
INSTALL = ("run `sudo apt-get install redis-server postgresql chromium` (Debian/Ubuntu) "
           "then the tests again, or `sudo bash scripts/test.sh`, which installs them and runs "
           "every tier (as `bash .ci/run` does on a fresh machine)")


def _tier(nodeid: str) -> str | None:
    parts = nodeid.replace("\\", "/").split("/")
    if len(parts) > 2 and parts[0] == "tests" and parts[1] in TIERS:
        return parts[1]
    return None


def _reason(report: Any) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def skipped_tiers(reports: list[Any]) -> dict[str, tuple[int, list[str]]]:
    """Tier -> (tests skipped, their most common reasons), for the tiers with skips."""
    counts: Counter[str] = Counter()
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    for report in reports:
        tier = _tier(report.nodeid)
        if tier is not None:
            counts[tier] += 1
            reasons[tier][_reason(report)] += 1
    return {t: (n, [r for r, _ in reasons[t].most_common(2)]) for t, n in counts.items()}


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int,
                            config: pytest.Config) -> None:
    tiers = skipped_tiers(terminalreporter.stats.get("skipped", []))
    if not tiers:
        return
    terminalreporter.section("tiers that did not run", sep="=", yellow=True, bold=True)
    for tier, (n, reasons) in sorted(tiers.items()):
        terminalreporter.write_line(
            f"{tier} tier: {n} test(s) skipped ({TIERS[tier]}): {'; '.join(reasons)}",
            yellow=True)
    if {"integration", "browser"} & set(tiers):
        terminalreporter.write_line(f"to run them, {INSTALL}", bold=True)
