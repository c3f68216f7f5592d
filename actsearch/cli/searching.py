"""``actsearch search``, ``resume`` and ``show``: run a search here (or on --server), read one."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .common import (
    console,
    db,
    err_console,
    fail,
    fmt,
    print_board,
    process_started_at,
    remote,
    si,
)

app = typer.Typer()


@app.command()
def search(
    dataset: Annotated[str | None, typer.Option(help="built-in name (digits, breast_cancer, wine, iris, "
                                                     "diabetes, mnist1d, two_spirals, teacher, "
                                                     "periodic, smooth_regression, ...) or a "
                                                     "CSV/Parquet/NPZ path")] = None,
    arch: Annotated[str | None, typer.Option(help="architecture: mlp:64,64 or cnn:16,32/64")] = None,
    trials: Annotated[int | None, typer.Option(help="compute budget: what this many trials at "
                                                    "--epochs cost (raced, or split evenly "
                                                    "with --allocation equal)")] = None,
    epochs: Annotated[int | None, typer.Option(help="epochs per candidate")] = None,
    families: Annotated[str | None, typer.Option(help="comma-separated families (default: every "
                                                      "registered family; relu is always added "
                                                      "as the baseline)")] = None,
    allocation: Annotated[str | None, typer.Option(help="race (default: successive halving over "
                                                        "families, relu never stopped) or equal "
                                                        "(same trials for every family)")] = None,
    label: Annotated[str | None, typer.Option(help="label column (CSV/Parquet) or y array (NPZ)")] = None,
    spec: Annotated[Path | None, typer.Option(help="JSON/YAML file with any search options; "
                                                   "flags override it")] = None,
    sampler: Annotated[str | None, typer.Option(help="tpe, random, qmc, cmaes, gp, nsga2")] = None,
    pruner: Annotated[str | None, typer.Option(help="median, hyperband, successive_halving, "
                                                    "percentile, none")] = None,
    time_budget: Annotated[float | None, typer.Option(help="seconds; stop starting new trials "
                                                           "after this")] = None,
    population_size: Annotated[int | None, typer.Option(help="K candidates trained at once")] = None,
    objective: Annotated[str | None, typer.Option(help="metric, metric+params or metric+flops")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    control: Annotated[str | None, typer.Option(
        help="relu: also run a ReLU-only search with the same total compute and report "
             "whether searching activations helped (about twice the time)")] = None,
    workers: Annotated[int, typer.Option(help="training processes")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print the leaderboard as JSON")] = False,
) -> None:
    """Run an activation search and print the leaderboard (here, or on --server's service)."""
    started = process_started_at()
    # Embedded: the training processes start first, so torch imports there while this
    # process imports the rest, prepares the database and asks the first population.
    pool = _start_trainers(workers) if remote["client"] is None else None
    try:
        flags = {"dataset": dataset, "architecture": arch, "trials": trials, "epochs": epochs,
                 "label": label, "sampler": sampler, "pruner": pruner,
                 "time_budget_s": time_budget, "population_size": population_size,
                 "objective": objective, "seed": seed, "allocation": allocation,
                 "control": control,
                 "families": ([f.strip() for f in families.split(",") if f.strip()]
                              if families else None)}
        _search(flags, spec=spec, as_json=as_json, pool=pool, started=started)
    finally:
        if pool is not None:
            pool.close()


def _start_trainers(workers: int) -> Any:
    from search.coordinator.trainers import TrainerPool

    return TrainerPool(workers).start()


def _search(flags: dict[str, Any], *, spec: Path | None, as_json: bool, pool: Any,
            started: float) -> None:
    """The search command's work: ``flags`` (spec fields, None where not given) override
    the ``--spec`` file's options."""
    from search.spec import load_spec_file, parse_spec

    options: dict[str, Any] = load_spec_file(spec) if spec else {}
    options.update({k: v for k, v in flags.items() if v is not None})
    if "dataset" not in options:
        fail("no dataset: pass --dataset digits (or a CSV/Parquet/NPZ path), or a --spec file "
              "with a 'dataset' key")
    search_spec = parse_spec(options)
    if remote["client"] is not None:
        from actsearch.remote import remote_search

        search_id, board = remote_search(remote["client"], options, err_console, quiet=as_json)
        if as_json:
            print(json.dumps({"search_id": search_id, **board.as_dict()}), flush=True)
        else:
            print_board(board, f"search {search_id} on {remote['client'].base_url}: leaderboard")
        analysis = remote["client"].search(search_id).get("analysis") or {}
        if analysis.get("state") in ("pending", "running"):
            err_console.print(f"analysis running on the service (fits, distillation); `actsearch "
                              f"show {search_id}` says when it is done", soft_wrap=True)
        return

    from search.race import describe_budget
    from search.service import create_search

    url, sessions = db()
    with sessions.begin() as session:
        row = create_search(session=session, spec=search_spec, storage_url=url, run_here=True)
        search_id, study_name = row.id, row.study_name
    # --json keeps stdout for the one JSON document: everything else goes to stderr.
    err_console.print(f"search [bold]{search_id}[/] (study {study_name}) on {search_spec.dataset}: "
                      f"{describe_budget(len(search_spec.families), search_spec.trials, search_spec.epochs, search_spec.allocation)}")
    _run_here(search_id, sessions, url, pool=pool, as_json=as_json, started=started)


@app.command()
def resume(
    search_id: Annotated[int, typer.Argument(help="the interrupted search's id (see `actsearch show`)")],
    workers: Annotated[int, typer.Option(help="training processes")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print the leaderboard as JSON")] = False,
) -> None:
    """Resume a search whose process stopped (Ctrl-C, a shutdown, a crash) where it stopped."""
    started = process_started_at()
    if remote["client"] is not None:
        fail("a service resumes its own searches when it starts; `actsearch resume` runs here")
    pool = _start_trainers(workers)
    try:
        from store import repo

        url, sessions = db()
        with sessions() as session:
            row = repo.get_search(session, search_id=search_id)
        err_console.print(f"resuming search [bold]{search_id}[/] ({row.state}) on {row.name!r}")
        _run_here(search_id, sessions, url, pool=pool, as_json=as_json, started=started)
    finally:
        pool.close()


def _interrupt_on_signals() -> None:
    """SIGTERM and SIGHUP stop a search like Ctrl-C does: resumable, not left "running"."""
    def raise_interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_interrupt)


def _run_here(search_id: int, sessions: Any, url: str, *, pool: Any, as_json: bool,
              started: float) -> None:
    """Run (or resume) a search in this process with a progress bar on stderr; print its board."""
    from search.coordinator import EmbeddedCoordinator

    coordinator = EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id,
                                      pool=pool, started_at=started)
    spec = coordinator.spec
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err_console,
                   transient=False)
    _interrupt_on_signals()
    try:
        with bar:
            task = bar.add_task("trials", total=None, info="")
            finals = bar.add_task("finalists", total=None, info="", visible=False)
            control = bar.add_task("control", total=None, info="", visible=False)

            def on_progress(p: Any) -> None:
                best = "-" if p.best_value is None else f"{p.best_value:.4f} ({p.best_family})"
                bar.update(task, total=p.total, completed=min(p.done, p.total),
                           info=f"running {p.running} pruned {p.pruned} failed {p.failed} | "
                                f"best {best} | {p.current}")
                if p.phase == "control" and p.control_target:
                    bar.update(finals, completed=p.finalists_total)
                    bar.update(control, visible=True, total=p.control_target,
                               completed=min(p.control_epochs, p.control_target),
                               info=f"ReLU alone, same candidate-epochs | {p.current}")
                if p.phase == "finalists":
                    bar.update(finals, visible=True, total=p.finalists_total,
                               completed=p.finalists_done,
                               info=f"x{spec.finalist_seeds} seeds | {p.current}")

            coordinator.progress_cb = on_progress
            board = coordinator.run()
    except KeyboardInterrupt:
        err_console.print(f"search {search_id} interrupted; finished trials are kept. Resume it "
                          f"with `actsearch resume {search_id}` (or start `actsearch serve`, "
                          "which resumes it)", soft_wrap=True)
        raise typer.Exit(130) from None
    from store import repo

    with sessions() as session:
        row = repo.get_search(session, search_id=search_id)
        state, error, study_name = row.state, row.error, row.study_name
    if as_json:
        print(json.dumps({"search_id": search_id, "study_name": study_name, "state": state,
                          **board.as_dict(), "timings": coordinator.timings}), flush=True)
    else:
        if error:
            err_console.print(f"[red]search {search_id} {state}:[/] {error}", highlight=False)
        print_board(board, f"search {search_id}: leaderboard ({spec.finalist_seeds} seeds per "
                           "finalist)")
        if spec.multi_objective:
            _print_pareto(coordinator.study, spec.objective.split("+")[1])
        console.print(f"database: {url}  (optuna-dashboard {url})")
        console.file.flush()
    _analyse_here(search_id, sessions)


def _analyse_here(search_id: int, sessions: Any) -> None:
    """The search's curve analysis (fits, distillation), after its leaderboard is printed.

    Status on stderr (stdout stays the leaderboard, or --json's one document). Ctrl-C
    leaves the search complete and its analysis pending, for `actsearch resume` or
    `actsearch serve` to finish.
    """
    import time

    from search.analysis.run import UNFINISHED, analyse_search
    from store import repo

    with sessions() as session:
        row = repo.get_search(session, search_id=search_id)
        if row.state != "complete" or row.analysis_state not in UNFINISHED:
            return
    label = "analysis running (fits, distillation)…"
    t0 = time.monotonic()
    # Ctrl-C's KeyboardInterrupt can land in a garbage-collector callback, where Python
    # prints it and carries on; the flag makes the next step raise it again.
    interrupted = threading.Event()

    def on_sigint(_signum: int, _frame: Any) -> None:
        interrupted.set()
        raise KeyboardInterrupt

    def checked(update: Callable[[str], Any] | None) -> Callable[[str], None]:
        def on_step(step: str) -> None:
            if interrupted.is_set():
                raise KeyboardInterrupt
            if update is not None:
                update(f"analysis running ({step})…")
        return on_step

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        if err_console.is_terminal:
            with err_console.status(label) as status:
                report = analyse_search(sessions, search_id, on_step=checked(status.update))
        else:
            err_console.print(label)
            report = analyse_search(sessions, search_id, on_step=checked(None))
        if interrupted.is_set():  # after the last step: the analysis is done, say so
            interrupted.clear()
    except KeyboardInterrupt:
        err_console.print(f"analysis interrupted: search {search_id} is complete and kept; its "
                          f"analysis is pending (`actsearch resume {search_id}` or `actsearch "
                          "serve` finishes it)", soft_wrap=True)
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    took = time.monotonic() - t0
    if report.state == "busy":
        err_console.print(f"analysis of search {search_id} is running in another process; "
                          f"`actsearch show {search_id}` says when it is done")
    elif report.state == "failed":
        err_console.print(f"[yellow]analysis failed[/] after {took:.1f} s (the leaderboard "
                          f"stands): {report.error}", highlight=False, soft_wrap=True)
    else:
        err_console.print(f"analysis done in {took:.1f} s: {report.fitted} trials fitted, "
                          f"{report.distilled} finalists distilled")


def _stopped(search_id: int, state: str) -> bool:
    """An unfinished search that no live process on this machine runs (Ctrl-C, kill, reboot)."""
    from core.settings import get_settings
    from search.coordinator.local import RESUMABLE_STATES, lock_holder, lock_path

    home = get_settings().home
    if state not in RESUMABLE_STATES:
        return False
    return (state == "interrupted" or lock_path(home, search_id).exists()) \
        and lock_holder(home, search_id) is None


def _analysis_line(session: Any, row: Any) -> str | None:
    """What ``actsearch show`` says of a search's curve analysis (None: nothing to analyse)."""
    from search.analysis.run import orphaned
    from search.progress import search_analysis

    a = search_analysis(row)
    state = a["state"]
    if state is None:
        return None
    if state == "failed":
        return f"analysis: [red]failed[/]: {a['error']}"
    if state == "done":
        return "analysis: done (fits and distillation: `actsearch curves`, the dashboard)"
    sessions = sessionmaker_of(session)
    if sessions is not None and orphaned(sessions, row.id):
        return (f"analysis: [yellow]{state}[/], no process runs it: `actsearch resume {row.id}` "
                "(or `actsearch serve`) finishes it")
    return "analysis: [yellow]running[/] (fits, distillation)"


def sessionmaker_of(session: Any) -> Any:
    """A session factory on the session's engine (to try the analysis lock)."""
    from sqlalchemy.orm import sessionmaker

    bind = session.get_bind()
    return sessionmaker(bind=bind) if bind is not None else None


def _print_pareto(study: Any, second: str) -> None:
    """The trade-off front of a multi-objective search (metric up, size or cost down)."""
    table = Table(title=f"Pareto front: validation metric vs {second}", title_justify="left")
    for col in ("trial", "family", "metric", second, "family parameters"):
        table.add_column(col)
    for t in sorted(study.best_trials, key=lambda t: t.values[1]):
        params = {k.split(".", 1)[1]: v for k, v in t.params.items() if "." in k}
        table.add_row(str(t.number), t.params["family"], f"{t.values[0]:.4f}", si(int(t.values[1])),
                      json.dumps(params)[:60])
    console.print(table)


@app.command()
def show(search_id: int) -> None:
    """Show a search: its state, leaderboard and trial counts."""
    if remote["client"] is not None:
        from actsearch.remote import remote_show

        board = remote_show(remote["client"], search_id, console)
        if board.rows:
            print_board(board, "leaderboard")
        return
    from search.progress import search_leaderboard
    from store import repo

    _, sessions = db()
    with sessions() as session:
        row = repo.get_search(session, search_id=search_id)
        trials = repo.list_trials(session, search_id=search_id, limit=None)
        console.print(f"search [bold]{row.id}[/] {row.name!r} state={row.state} study={row.study_name}")
        if row.error:
            console.print(f"[red]error:[/] {row.error}")
        if _stopped(row.id, row.state):
            console.print(f"[yellow]its process is gone: resume it with `actsearch resume "
                          f"{row.id}`[/] (or start `actsearch serve`)", soft_wrap=True)
        board = search_leaderboard(session, row=row)
        analysis = _analysis_line(session, row)
    if analysis:
        console.print(analysis, soft_wrap=True)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    console.print("trials: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    failures: dict[tuple[str, str], list[str]] = {}  # (family, first error line) -> trials
    for t in trials:
        if t.state == "failed" and t.error:
            key = (t.family, t.error.strip().splitlines()[0][:200])
            failures.setdefault(key, []).append(str(t.trial_number if t.trial_number is not None
                                                    else f"id {t.id}"))
    for (family, error), numbers in list(failures.items())[:5]:
        console.print(f"[red]failed[/] {family} trial(s) {', '.join(numbers[:8])}: {error}",
                      highlight=False)
    table = Table(title="best search trials", title_justify="left")
    for col in ("trial", "id", "family", "value", "state", "params"):
        table.add_column(col)
    top = sorted((t for t in trials if t.phase == "search" and t.value is not None),
                 key=lambda t: t.value, reverse=True)[:10]
    for t in top:
        table.add_row(str(t.trial_number), str(t.id), t.family, fmt(t.value), t.state,
                      json.dumps(t.family_params)[:60])
    console.print(table)
    if board.rows:
        print_board(board, "leaderboard")


