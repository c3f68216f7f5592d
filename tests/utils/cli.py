"""Run the ``actsearch`` CLI inside the test process."""

from __future__ import annotations

import sys

import pytest


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            *args: str) -> tuple[int, str, str]:
    """``actsearch *args`` in this process: (exit code, stdout, stderr)."""
    from actsearch import cli

    monkeypatch.setattr(sys, "argv", ["actsearch", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
