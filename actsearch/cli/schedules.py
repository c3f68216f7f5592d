"""``actsearch schedule ...``: recurring searches, in the local database or over HTTP.

Locally a schedule is stored in this machine's database and fired by the
runner of ``actsearch serve`` on that database; with ``--server URL`` it goes to
that service (fired by its runner, or by ``actsearch beat`` in a cluster).
Shared helpers come from :mod:`actsearch.cli.common`.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from . import common

schedule_app = typer.Typer(
    no_args_is_help=True, add_completion=False,
    help="Recurring searches: re-run a search on the latest version of a dataset, or add "
         "trials to a search, on a cron schedule.")

FIRED_BY = ("it fires while `actsearch serve` runs on this database "
            "(ACTSEARCH_SCHEDULE_TICK_S sets how often it checks)")



def _rerun_template(dataset: str | None, spec: Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    """The rerun template from ``--spec`` and flags (flags win), as ``actsearch search`` reads them."""
    from search.spec import load_spec_file

    options: dict[str, Any] = load_spec_file(spec) if spec else {}
    if dataset is not None:
        options["dataset"] = dataset
    options.update({k: v for k, v in flags.items() if v is not None})
    if "dataset" not in options:
        common.fail("no dataset: pass --dataset NAME (a stored dataset or a builtin), a --spec "
                     "file with a 'dataset' key, or --add-trials N --to SEARCH_ID")
    name = str(options["dataset"])
    if common.remote["client"] is None and Path(name).expanduser().is_file():
        # The runner that fires it may run from another directory.
        options["dataset"] = str(Path(name).expanduser().resolve())
    return {"kind": "rerun", "spec": options}


@schedule_app.command("create")
def create(
    cron: Annotated[str, typer.Option(help='when: "0 3 * * *" (03:00 daily), "@hourly", or 6 '
                                           'fields with seconds last ("* * * * * */30")')],
    name: Annotated[str | None, typer.Option(help="display name")] = None,
    timezone: Annotated[str, typer.Option(help="IANA zone the cron is read in")] = "UTC",
    add_trials: Annotated[int | None, typer.Option(
        help="instead of a spec: add this many warm-started trials to --to SEARCH_ID each time")
    ] = None,
    to: Annotated[int | None, typer.Option(help="the search --add-trials continues")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="stored dataset name or builtin; each run uses its latest version")] = None,
    arch: Annotated[str | None, typer.Option(help="architecture: mlp:64,64 or cnn:16,32/64")] = None,
    trials: Annotated[int | None, typer.Option(help="tuning trials in all per run")] = None,
    epochs: Annotated[int | None, typer.Option(help="epochs per candidate")] = None,
    families: Annotated[str | None, typer.Option(help="comma-separated families")] = None,
    label: Annotated[str | None, typer.Option(help="label column of a CSV/Parquet file")] = None,
    spec: Annotated[Path | None, typer.Option(help="JSON/YAML file with search options; "
                                                   "flags override it")] = None,
    sampler: Annotated[str | None, typer.Option(help="tpe, random, qmc, cmaes, gp, nsga2")] = None,
    pruner: Annotated[str | None, typer.Option(help="median, hyperband, successive_halving, "
                                                    "percentile, none")] = None,
    time_budget: Annotated[float | None, typer.Option(help="seconds per run")] = None,
    population_size: Annotated[int | None, typer.Option(help="K candidates trained at once")] = None,
    objective: Annotated[str | None, typer.Option(help="metric, metric+params or metric+flops")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the schedule as JSON")] = False,
) -> None:
    """Create a schedule: a search spec re-run on a cron, or trials added to a search."""
    given = {  # option -> (spec key, value)
        "--arch": ("architecture", arch), "--trials": ("trials", trials),
        "--epochs": ("epochs", epochs), "--label": ("label", label),
        "--sampler": ("sampler", sampler), "--pruner": ("pruner", pruner),
        "--time-budget": ("time_budget_s", time_budget),
        "--population-size": ("population_size", population_size),
        "--objective": ("objective", objective), "--seed": ("seed", seed),
        "--families": ("families", [f.strip() for f in families.split(",") if f.strip()]
                       if families else None),
    }
    flags = {key: value for key, value in given.values()}
    if add_trials is not None or to is not None:
        if add_trials is None or to is None:
            common.fail("--add-trials N and --to SEARCH_ID go together")
        used = [opt for opt, (_, v) in given.items() if v is not None]
        used += (["--dataset"] if dataset else []) + (["--spec"] if spec else [])
        if used:
            common.fail(f"--add-trials reuses the search's own spec; drop {', '.join(used)}")
        template: dict[str, Any] = {"kind": "add_trials", "search_id": to, "trials": add_trials}
    else:
        template = _rerun_template(dataset, spec, flags)
    client = common.remote["client"]
    if client is not None:
        out = client.create_schedule({"name": name, "cron": cron, "timezone": timezone,
                                      "template": template})
        where = f"on {client.base_url}"
    else:
        from search.schedules import create_schedule

        _, sessions = common.db()
        with sessions.begin() as session:
            row = create_schedule(session, name=name, cron=cron, template=template, tz=timezone)
            out = _row_dict(row)
        where = f"in the local database; {FIRED_BY}"
    if as_json:
        print(json.dumps(out))
        return
    common.console.print(f"schedule [bold]{out['id']}[/] {out['name']!r} created {where}; "
                      f"next run {_when(out['next_run_at'])}", highlight=False)


def _row_dict(row: Any) -> dict[str, Any]:
    """A schedule row as the API's JSON shape (so both modes print the same)."""
    out = {c: getattr(row, c) for c in (
        "id", "name", "cron", "timezone", "template", "state", "next_run_at", "last_run_at",
        "last_search_id", "last_error", "run_count", "created_at")}
    for key in ("next_run_at", "last_run_at", "created_at"):
        out[key] = out[key].isoformat() if out[key] is not None else None
    return out


def _when(value: str | None) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S %Z")


@schedule_app.command("list")
def list_(
    state: Annotated[str | None, typer.Option(help="active or paused")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List schedules, newest first."""
    client = common.remote["client"]
    if client is not None:
        rows = client.schedules(state=state)["data"]
    else:
        from store import repo

        _, sessions = common.db()
        with sessions() as session:
            rows = [_row_dict(r) for r in repo.list_schedules(session, state=state, limit=None)]
    if as_json:
        print(json.dumps(rows))
        return
    if not rows:
        common.console.print("no schedules; create one with `actsearch schedule create`")
        return
    table = Table(title="schedules", title_justify="left")
    for col in ("id", "name", "state", "cron", "tz", "next run", "last run", "runs",
                "last search", "last error"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["id"]), r["name"], r["state"], r["cron"], r["timezone"],
                      _when(r["next_run_at"]), _when(r["last_run_at"]), str(r["run_count"]),
                      str(r["last_search_id"] or "-"), (r["last_error"] or "-")[:60])
    common.console.print(table)


@schedule_app.command()
def show(
    schedule_id: int,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show a schedule and the searches it created, newest first."""
    client = common.remote["client"]
    if client is not None:
        out = client.schedule(schedule_id)
    else:
        from search.schedules import schedule_runs
        from store import repo

        _, sessions = common.db()
        with sessions() as session:
            out = _row_dict(repo.get_schedule(session, schedule_id=schedule_id))
            out["runs"] = [{"id": r.id, "name": r.name, "state": r.state,
                            "created_at": r.created_at.isoformat()}
                           for r in schedule_runs(session, schedule_id=schedule_id, limit=20)]
    if as_json:
        print(json.dumps(out))
        return
    common.console.print(
        f"schedule [bold]{out['id']}[/] {out['name']!r} {out['state']} cron {out['cron']!r} "
        f"({out['timezone']}); next run {_when(out['next_run_at'])}; {out['run_count']} run(s)",
        highlight=False)
    common.console.print(f"template: {json.dumps(out['template'])}", highlight=False)
    if out["last_error"]:
        common.console.print(f"[red]last error:[/] {out['last_error']}", highlight=False)
    for r in out["runs"]:
        common.console.print(f"  search {r['id']} {r['state']:<10} {r['name']}", highlight=False)


def _act(schedule_id: int, action: str) -> dict[str, Any]:
    client = common.remote["client"]
    if client is not None:
        return client.schedule_action(schedule_id, action)  # type: ignore[no-any-return]
    from search import schedules

    fn = {"pause": schedules.pause_schedule, "resume": schedules.resume_schedule}[action]
    _, sessions = common.db()
    with sessions.begin() as session:
        return _row_dict(fn(session, schedule_id=schedule_id))


@schedule_app.command()
def pause(schedule_id: int) -> None:
    """Stop a schedule from firing (its searches carry on)."""
    out = _act(schedule_id, "pause")
    common.console.print(f"schedule {out['id']} paused")


@schedule_app.command()
def resume(schedule_id: int) -> None:
    """Fire again from the next cron time (missed firings are not replayed)."""
    out = _act(schedule_id, "resume")
    common.console.print(f"schedule {out['id']} active; next run {_when(out['next_run_at'])}")


@schedule_app.command()
def delete(schedule_id: int) -> None:
    """Delete a schedule; the searches it created stay."""
    client = common.remote["client"]
    if client is not None:
        client.delete_schedule(schedule_id)
    else:
        from search.schedules import delete_schedule

        _, sessions = common.db()
        with sessions.begin() as session:
            delete_schedule(session, schedule_id=schedule_id)
    common.console.print(f"schedule {schedule_id} deleted")


__all__ = ["schedule_app"]
