"""The test run names the tiers it skipped and the command that would run them."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py").read_text()


def test_skipped_tiers_are_named_with_the_install_command(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.mkdir("tests")
    for tier, reason in (("integration", "integration tier needs redis-server"),
                         ("browser", "/usr/bin/chromium is missing")):
        folder = pytester.path / "tests" / tier
        folder.mkdir()
        (folder / "test_x.py").write_text(
            "import pytest\n\n"
            f"def test_a():\n    pytest.skip({reason!r})\n\n"
            f"def test_b():\n    pytest.skip({reason!r})\n")
    unit = pytester.path / "tests" / "unit"
    unit.mkdir()
    (unit / "test_ok.py").write_text("def test_ok():\n    pass\n")
    result = pytester.runpytest("tests", "-q", "--import-mode=importlib")
    result.assert_outcomes(passed=1, skipped=4)
    result.stdout.fnmatch_lines([
        "*tiers that did not run*",
        "browser tier: 2 test(s) skipped (Chromium and Playwright): /usr/bin/chromium is missing",
        "integration tier: 2 test(s) skipped (redis-server and PostgreSQL): integration tier "
        "needs redis-server",
        "*sudo apt-get install redis-server postgresql chromium*bash .ci/run*",
    ])


def test_a_run_that_skips_no_tier_says_nothing(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.mkdir("tests")
    unit = pytester.path / "tests" / "unit"
    unit.mkdir()
    (unit / "test_ok.py").write_text(
        "import pytest\n\ndef test_ok():\n    pass\n\n"
        "def test_skip():\n    pytest.skip('not a tier')\n")
    result = pytester.runpytest("tests", "-q", "--import-mode=importlib")
    assert "tiers that did not run" not in result.stdout.str()
