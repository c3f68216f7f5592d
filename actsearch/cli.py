"""The ``actsearch`` command: run searches in embedded mode and look at their results.

Every user mistake ends as one ``error: ...`` line and exit code 2, never a traceback.
"""

from __future__ import annotations

import io
import json
import math
import sys
import zipfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.errors import ActsearchError, InvalidInput

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Which activation function should your network use? Search it on your data.")
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True)


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def _db() -> tuple[str, Any]:
    """The database URL and a session factory, migrated to the current schema."""
    from core.settings import get_settings
    from store.db import init_db, make_engine, session_factory

    url = get_settings().resolved_database_url
    init_db(url)
    return url, session_factory(make_engine(url))


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _si(n: int | None) -> str:
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
                          ("params", "right"), ("FLOPs", "right"), ("trials/pruned", "right"),
                          (f"test {board.metric}", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    for rank, row in enumerate(board.rows, start=1):
        delta = row.delta_vs_baseline
        delta_txt = "baseline" if row.baseline else (
            "-" if delta is None else f"[{'green' if delta > 0 else 'red'}]{delta:+.4f}[/]")
        test = "-" if row.test_mean is None else f"{row.test_mean:.4f} ± {row.test_ci95:.4f}"
        table.add_row(str(rank), f"[bold]{row.family}[/]" if rank == 1 else row.family,
                      f"{row.mean:.4f}", f"{row.ci95:.4f}", str(row.n_seeds), delta_txt,
                      _si(row.n_params), _si(row.flops),
                      f"{row.search_trials}/{row.search_pruned}", test)
    return table


_remote: dict[str, Any] = {"client": None}


@app.callback()
def _main(
    server: Annotated[str | None, typer.Option(
        envvar="ACTSEARCH_SERVER",
        help="URL of a running actsearch service (`actsearch serve` or the cluster's API); "
             "without it commands run embedded on this machine")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="ACTSEARCH_API_KEY",
                                                help="API key for --server")] = None,
) -> None:
    if server:
        from actsearch.client import ActsearchClient

        _remote["client"] = ActsearchClient(server, api_key=api_key)


@app.command()
def search(
    dataset: Annotated[str | None, typer.Option(help="built-in name (digits, breast_cancer, wine, iris, "
                                                     "diabetes, mnist1d, two_spirals, teacher) or a "
                                                     "CSV/Parquet/NPZ path")] = None,
    arch: Annotated[str | None, typer.Option(help="architecture: mlp:64,64 or cnn:16,32/64")] = None,
    trials: Annotated[int | None, typer.Option(help="tuning trials in all, split evenly across "
                                                    "families")] = None,
    epochs: Annotated[int | None, typer.Option(help="epochs per candidate")] = None,
    families: Annotated[str | None, typer.Option(help="comma-separated families (relu is always "
                                                      "added as the baseline)")] = None,
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
    workers: Annotated[int, typer.Option(help="training processes")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print the leaderboard as JSON")] = False,
) -> None:
    """Run an activation search in embedded mode and print the leaderboard."""
    from search.spec import load_spec_file, parse_spec

    options: dict[str, Any] = load_spec_file(spec) if spec else {}
    flags = {"dataset": dataset, "architecture": arch, "trials": trials, "epochs": epochs,
             "label": label, "sampler": sampler, "pruner": pruner, "time_budget_s": time_budget,
             "population_size": population_size, "objective": objective, "seed": seed,
             "families": [f.strip() for f in families.split(",") if f.strip()] if families else None}
    options.update({k: v for k, v in flags.items() if v is not None})
    if "dataset" not in options:
        _fail("no dataset: pass --dataset digits (or a CSV/Parquet/NPZ path), or a --spec file "
              "with a 'dataset' key")
    search_spec = parse_spec(options)
    if _remote["client"] is not None:
        from actsearch.remote import remote_search

        board = remote_search(_remote["client"], options, console, quiet=as_json)
        if as_json:
            print(json.dumps(board.as_dict()))
        else:
            _print_board(board, f"search on {_remote['client'].base_url}: leaderboard")
        return

    from search.embedded import EmbeddedCoordinator
    from search.service import create_search

    url, sessions = _db()
    with sessions.begin() as session:
        row = create_search(session=session, spec=search_spec, storage_url=url, run_here=True)
        search_id, study_name = row.id, row.study_name
    console.print(f"search [bold]{search_id}[/] (study {study_name}) on {search_spec.dataset}: "
                  f"{len(search_spec.families)} families x {search_spec.trials_per_family()} trials, "
                  f"{search_spec.epochs} epochs")

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                   transient=False, disable=as_json)
    with bar:
        task = bar.add_task("trials", total=None, info="")
        finals = bar.add_task("finalists", total=None, info="", visible=False)

        def on_progress(p: Any) -> None:
            best = "-" if p.best_value is None else f"{p.best_value:.4f} ({p.best_family})"
            bar.update(task, total=p.total, completed=p.done,
                       info=f"pruned {p.pruned} failed {p.failed} | best {best} | {p.current}")
            if p.phase == "finalists":
                bar.update(finals, visible=True, total=p.finalists_total,
                           completed=p.finalists_done, info=f"x{search_spec.finalist_seeds} seeds | {p.current}")

        coordinator = EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id,
                                          workers=workers, progress=on_progress)
        board = coordinator.run()
    if as_json:
        print(json.dumps({"search_id": search_id, "study_name": study_name, **board.as_dict()}))
        return
    _print_board(board, f"search {search_id}: leaderboard ({search_spec.finalist_seeds} seeds per finalist)")
    if search_spec.multi_objective:
        _print_pareto(coordinator.study, search_spec.objective.split("+")[1])
    console.print(f"database: {url}  (optuna-dashboard {url})")


def _print_board(board: Any, title: str) -> None:
    console.print(leaderboard_table(board, title))
    w, b = board.winner, board.baseline
    if w is None:
        console.print("[yellow]no finalist completed; see `actsearch show` for the trials[/]")
        return
    verdict = "the ReLU baseline itself" if w.baseline else (
        f"{w.delta_vs_baseline:+.4f} vs tuned ReLU" if b else "no ReLU baseline finished")
    overlap = b is not None and not w.baseline and (w.mean - w.ci95) <= (b.mean + b.ci95)
    console.print(f"best: [bold]{w.family}[/] {board.metric} {w.mean:.4f} ± {w.ci95:.4f} "
                  f"({verdict}); test {board.metric} {_fmt(w.test_mean)} ± {_fmt(w.test_ci95)}"
                  + ("  [yellow](intervals overlap the baseline's)[/]" if overlap else ""))


def _print_pareto(study: Any, second: str) -> None:
    """The trade-off front of a multi-objective search (metric up, size or cost down)."""
    table = Table(title=f"Pareto front: validation metric vs {second}", title_justify="left")
    for col in ("trial", "family", "metric", second, "family parameters"):
        table.add_column(col)
    for t in sorted(study.best_trials, key=lambda t: t.values[1]):
        params = {k.split(".", 1)[1]: v for k, v in t.params.items() if "." in k}
        table.add_row(str(t.number), t.params["family"], f"{t.values[0]:.4f}", _si(int(t.values[1])),
                      json.dumps(params)[:60])
    console.print(table)


@app.command()
def show(search_id: int) -> None:
    """Show a search: its state, leaderboard and trial counts."""
    if _remote["client"] is not None:
        from actsearch.remote import remote_show

        board = remote_show(_remote["client"], search_id, console)
        if board.rows:
            _print_board(board, "leaderboard")
        return
    from search.progress import search_leaderboard
    from store import repo

    _, sessions = _db()
    with sessions() as session:
        row = repo.get_search(session, search_id=search_id)
        trials = repo.list_trials(session, search_id=search_id, limit=None)
        console.print(f"search [bold]{row.id}[/] {row.name!r} state={row.state} study={row.study_name}")
        if row.error:
            console.print(f"[red]error:[/] {row.error}")
        board = search_leaderboard(session, row=row)
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
        table.add_row(str(t.trial_number), str(t.id), t.family, _fmt(t.value), t.state,
                      json.dumps(t.family_params)[:60])
    console.print(table)
    if board.rows:
        _print_board(board, "leaderboard")


@app.command()
def curves(
    trial_id: int,
    out: Annotated[Path | None, typer.Option(help="PNG path (default: curves-trial-ID.png)")] = None,
) -> None:
    """Plot a trial's learned activation curves over epochs (PNG) and sketch them here."""
    import numpy as np

    from actsearch.plots import ascii_sketch, plot_curves_png
    from store import repo

    if _remote["client"] is not None:
        from actsearch.remote import remote_curves

        family, family_params, rows, stats = remote_curves(_remote["client"], trial_id)
        activations = _remote["client"].trial_activations(trial_id)
        fits = activations.get("fits") or []
        if activations.get("network"):
            fits.append({"layer": -1, "kind": "network", "extra": activations["network"]})
    else:
        _, sessions = _db()
        with sessions() as session:
            trial = repo.get_trial(session, trial_id=trial_id)
            rows = repo.trial_curves(session, trial_id=trial_id)
            stats = repo.trial_preact_stats(session, trial_id=trial_id)
            fits = repo.trial_fits(session, trial_id=trial_id)
            family, family_params = trial.family, trial.family_params
    if not rows:
        _fail(f"trial {trial_id} ({family}) has no stored curves: its family mixes units "
              "(maxout, groupsort, k-wta) or it failed before training")
    path = out or Path(f"curves-trial-{trial_id}.png")
    plot_curves_png(rows, stats, path, f"trial {trial_id}: {family} {json.dumps(family_params)}")
    for layer in sorted({r["layer"] for r in rows}):
        mine = sorted((r for r in rows if r["layer"] == layer), key=lambda r: r["epoch"])
        last = mine[-1]
        y = np.median(np.asarray(last["y"]).reshape(-1, len(last["x"])), axis=0)
        console.print(f"[bold]layer {layer}[/], epoch {last['epoch']} "
                      f"(recorded epochs {[r['epoch'] for r in mine]}):")
        console.print(ascii_sketch(last["x"], y), highlight=False)
        for line in _fit_lines([f for f in fits if f["layer"] == layer]):
            console.print(line, highlight=False, markup=False)
    if not fits:
        console.print("no fits stored (fixed family, unfinished trial, or analysed before fits existed)")
    network = next((f for f in fits if f["kind"] == "network"), None)
    if network is not None:
        for line in network_lines(network["extra"]):
            console.print(line, highlight=False, markup=False)
    console.print(f"wrote {path}")


def _fit_lines(fits: list[dict[str, Any]]) -> list[str]:
    """One layer's analysis: best closed form, linearity (prunable), distilled knots."""

    def num(v: Any) -> str:
        return "-" if v is None else f"{v:.3g}"

    lines = []
    closed = [f for f in fits if f["kind"] == "closed_form"]
    if closed:
        best = closed[0]
        params = " ".join(f"{k}={num(v)}" for k, v in best["params"].items())
        lines.append(f"  best closed form (epoch {best['epoch']}): {best['family']} {params}  "
                     f"rmse={num(best['rmse'])} max_err={num(best['max_error'])} r2={num(best['r2'])}")
    for f in fits:
        extra = f.get("extra") or {}
        if f["kind"] == "linear":
            verdict = ("NEAR-LINEAR: prunable/mergeable into its neighbours" if extra.get("near_linear")
                       else "not linear")
            lines.append(f"  linear fit: slope={num(f['params'].get('slope'))} "
                         f"intercept={num(f['params'].get('intercept'))} "
                         f"max_rel_err={num(extra.get('max_rel_error'))} -> {verdict}; "
                         f"near-linear units {num(extra.get('near_linear_unit_fraction'))} "
                         f"of {extra.get('units', '-')}")
        elif f["kind"] == "distilled":
            speed = extra.get("speedup")
            lines.append(f"  distilled: {f['params'].get('knots')} knots, max_err={num(f['max_error'])}"
                         + (f", speed-up x{speed:.2f} (CPU forward)" if speed else ""))
    return lines


def network_lines(net: dict[str, Any]) -> list[str]:
    """A finalist's network-level analysis: accuracy after distilling, after merging layers."""

    def num(v: Any, fmt: str = ".4f") -> str:
        return "-" if v is None else format(v, fmt)

    def change(d: dict[str, Any]) -> str:
        text = (f"val {num(d.get('validation_before'))} -> {num(d.get('validation_after'))} "
                f"({num(d.get('validation_change'), '+.4f')})")
        if d.get("test_change") is not None:
            text += (f", test {num(d.get('test_before'))} -> {num(d.get('test_after'))} "
                     f"({num(d.get('test_change'), '+.4f')})")
        return text

    size = net.get("size") or {}
    d = net.get("distilled") or {}
    knots = ", ".join(f"L{x['layer']}:{x['knots']}" for x in d.get("layers", []))
    lines = [f"whole network ({net.get('task')}; {size.get('hidden_layers')} hidden layers, "
             f"{size.get('params')} params, {size.get('flops')} FLOPs):",
             f"  distilled (rel. error {num(d.get('rel_error'), 'g')}, knots {knots}): {change(d)}"
             + (f"; speed-up x{d['speedup']:.2f} on a batch of {d.get('batch')}"
                if d.get("speedup") else "")]
    merge = net.get("merge") or {}
    for row in merge.get("layers", []):
        if row.get("mergeable"):
            after = row.get("size_after") or {}
            lines.append(f"  layer {row['layer']}: near-linear, merged into the next layer: "
                         f"{change(row)}; params {size.get('params')} -> {after.get('params')}, "
                         f"FLOPs {size.get('flops')} -> {after.get('flops')}")
        elif row.get("near_linear"):
            lines.append(f"  layer {row['layer']}: near-linear, not mergeable: {row.get('reason')}")
    both = merge.get("all")
    if both and len(both.get("layers", [])) > 1:
        after = both.get("size_after") or {}
        lines.append(f"  all mergeable layers {both['layers']} merged: {change(both)}; "
                     f"{after.get('hidden_layers')} hidden layers, params {after.get('params')}")
    if not any(r.get("near_linear") for r in merge.get("layers", [])):
        lines.append("  no near-linear layer: nothing to merge")
    return lines


@app.command()
def export(
    search_id: int,
    activations: Annotated[str, typer.Option(
        help="learned (the trained activations) or distilled (piecewise-linear copies)")
    ] = "learned",
    out: Annotated[Path | None, typer.Option(
        "-o", "--out", help="zip path (default: actsearch-search-ID.zip)")] = None,
) -> None:
    """Write the best model (torch.export program, state_dict, scaler, labels) as a zip."""
    if activations not in ("learned", "distilled"):
        _fail(f"--activations must be 'learned' or 'distilled', not {activations!r}")
    path = out or Path(f"actsearch-search-{search_id}.zip")
    if _remote["client"] is not None:
        data = _remote["client"].export(search_id, activations=activations)
    else:
        from search.export import export_search

        _, sessions = _db()
        with sessions() as session:
            data = export_search(session, search_id=search_id, activations=activations)
    try:
        path.write_bytes(data)
    except OSError as exc:
        _fail(f"cannot write {path}: {exc.strerror}")
    meta = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("meta.json"))
    note = ""
    d = meta.get("distillation")
    if d:
        note = (f"; distilled: validation {meta['metric']} {_fmt(d['validation_before'])} -> "
                f"{_fmt(d['validation_after'])}")
    console.print(f"wrote {path}: {meta['family']} trial {meta['trial_id']}, {activations} "
                  f"activations{note}", highlight=False)


@app.command()
def families() -> None:
    """List the activation families with their formulas and searched parameters."""
    from models.activations import families as all_families

    table = Table(title="activation families", title_justify="left")
    table.add_column("name")
    table.add_column("formula")
    table.add_column("kind")
    table.add_column("parameters (searched)")
    for cls in all_families():
        params = ", ".join(
            f"{p.name}{'*' if p.learned else ''}"
            + (f"∈{list(p.choices)}" if p.kind == "categorical" else f"∈[{p.low:g},{p.high:g}]")
            for p in cls.space())
        table.add_row(cls.name, cls.formula, "trainable" if cls.trainable else "fixed", params or "-")
    console.print(table)
    console.print("* initial value of a learned parameter")


def _register_service_commands() -> None:
    """`serve` (API + embedded coordinator) and `worker`/`beat` (distributed) live in their own modules."""
    from actsearch import cli_service

    for name, fn in cli_service.COMMANDS.items():
        app.command(name)(fn)


_register_service_commands()

from actsearch.cli_schedule import schedule_app  # noqa: E402  (typer + stdlib only at import)

app.add_typer(schedule_app, name="schedule")

from actsearch.cli_keys import keys_app  # noqa: E402  (typer + stdlib only at import)

app.add_typer(keys_app, name="keys")


def main() -> None:
    """Console-script entry point: user errors become one line and exit code 2."""
    try:
        app()
    except ActsearchError as exc:
        err_console.print(f"[bold red]error:[/] {exc.detail}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


__all__ = ["app", "main", "InvalidInput"]
