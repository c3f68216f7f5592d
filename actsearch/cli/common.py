"""What every ``actsearch`` command shares: consoles, the one-line error, the database, tables.

Every user mistake ends as one ``error: ...`` line and exit code 2, never a traceback.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True)
# The --server client, set by the top-level callback; None: commands run embedded here.
remote: dict[str, Any] = {"client": None}


def process_started_at() -> float:
    """The ``time.monotonic()`` at which this process started (Linux: from /proc, so the
    interpreter's own start and every import count); elsewhere, now."""
    now = time.monotonic()
    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return now
    return now - age if 0.0 <= age < 600.0 else now


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def db() -> tuple[str, Any]:
    """The database URL and a session factory, migrated to the current schema."""
    from core.settings import get_settings
    from store.db import init_db, make_engine, session_factory

    url = get_settings().resolved_database_url
    init_db(url)
    return url, session_factory(make_engine(url))


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def si(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def leaderboard_table(board: Any, title: str) -> Table:
    """The leaderboard as a Rich table: mean ± 95% interval, baseline marked, Δ vs ReLU."""
    table = Table(title=title, title_justify="left")
    for name, justify in (("#", "right"), ("family", "left"), (f"val {board.metric}", "right"),
                          ("±95% CI", "right"), ("seeds", "right"), ("Δ vs relu", "right"),
                          ("params", "right"), ("FLOPs", "right"),
                          ("budget: trials/pruned x epochs", "right"),
                          (f"test {board.metric}", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    for rank, row in enumerate(board.rows, start=1):
        delta = row.delta_vs_baseline
        delta_txt = "baseline" if row.baseline else (
            "-" if delta is None else f"[{'green' if delta > 0 else 'red'}]{delta:+.4f}[/]")
        test = "-" if row.test_mean is None else f"{row.test_mean:.4f} ± {row.test_ci95:.4f}"
        table.add_row(str(rank), f"[bold]{row.family}[/]" if rank == 1 else row.family,
                      f"{row.mean:.4f}", f"{row.ci95:.4f}", str(row.n_seeds), delta_txt,
                      si(row.n_params), si(row.flops),
                      _budget(row), test)
    return table


def _budget(row: Any) -> str:
    epochs = getattr(row, "budget_epochs", None)
    return f"{row.search_trials}/{row.search_pruned}" + (f" x {epochs}" if epochs else "")


def stopped_lines(board: Any) -> list[str]:
    """The families the race stopped, one line per rung (they are not ranked)."""
    by_rung: dict[int, list[Any]] = {}
    for s in getattr(board, "stopped", None) or []:
        by_rung.setdefault(s.rung, []).append(s)
    lines = []
    for rung in sorted(by_rung, reverse=True):
        group = by_rung[rung]
        names = ", ".join(f"{s.family} {fmt(s.best_value)}" for s in group)
        lines.append(f"stopped at rung {rung} ({group[0].trials} trials x {group[0].epochs} "
                     f"epochs each, ranked by validation loss; best {board.metric} then): {names}")
    return lines


def print_board(board: Any, title: str) -> None:
    console.print(leaderboard_table(board, title))
    for line in stopped_lines(board):
        console.print(f"[dim]{line}[/]")
    w, b = board.winner, board.baseline
    if w is None:
        console.print("[yellow]no finalist completed; see `actsearch show` for the trials[/]")
        return
    verdict = "the ReLU baseline itself" if w.baseline else (
        f"{w.delta_vs_baseline:+.4f} vs tuned ReLU" if b else "no ReLU baseline finished")
    overlap = b is not None and not w.baseline and (w.mean - w.ci95) <= (b.mean + b.ci95)
    console.print(f"best: [bold]{w.family}[/] {board.metric} {w.mean:.4f} ± {w.ci95:.4f} "
                  f"({verdict}); test {board.metric} {fmt(w.test_mean)} ± {fmt(w.test_ci95)}"
                  + ("  [yellow](intervals overlap the baseline's)[/]" if overlap else ""))
    c = getattr(board, "control", None)
    if c is not None:
        compute = "" if c.candidate_epochs is None else (
            f", {c.candidate_epochs} vs {c.search_candidate_epochs} candidate-epochs")
        console.print(f"control: [bold]{c.family}[/] alone ({c.trials} trials{compute}): "
                      f"{board.metric} {c.mean:.4f} ± {c.ci95:.4f}; test {board.metric} "
                      f"{fmt(c.test_mean)} ± {fmt(c.test_ci95)}", highlight=False)
        color = {"helped": "green", "hurt": "red"}.get(c.verdict, "yellow")
        console.print(f"[{color}]{c.message}[/]", highlight=False)


