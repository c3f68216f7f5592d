"""What `--help` says must hold whether the command runs here or on --server."""

from __future__ import annotations

import pytest

from tests.utils.cli import run_cli


@pytest.mark.parametrize("args", [("search", "--help"),
                                  ("--server", "http://127.0.0.1:9", "search", "--help")])
def test_search_help_does_not_claim_embedded_mode(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str],
                                                  args: tuple[str, ...]) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, *args)
    assert code == 0
    assert "embedded mode" not in out.lower()
    assert "here, or on --server" in " ".join(out.split())


def test_resume_is_a_command(monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "resume", "--help")
    assert code == 0 and "Resume a search whose process stopped" in " ".join(out.split())
