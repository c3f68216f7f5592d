"""The CLI's commands against a running service (``actsearch --server URL ...``)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from actsearch.client import ActsearchClient
from search.control import control_from_dict
from search.protocol import Leaderboard, LeaderboardRow, StoppedFamily

_ROW_FIELDS = {f.name for f in fields(LeaderboardRow)}


def leaderboard_from_api(data: dict[str, Any]) -> Leaderboard:
    """The API's leaderboard JSON as the same object the embedded mode prints."""
    rows = [LeaderboardRow(**{k: v for k, v in r.items() if k in _ROW_FIELDS}) for r in data["rows"]]
    stopped = [StoppedFamily(**s) for s in data.get("stopped", [])]
    return Leaderboard(metric=data["metric"], rows=rows, stopped=stopped,
                       control=control_from_dict(data.get("control")))


def remote_search(client: ActsearchClient, options: dict[str, Any], console: Console,
                  quiet: bool = False) -> tuple[int, Leaderboard]:
    """Upload a local file if the dataset is one, submit the search, follow it to the end.

    Returns the search id and its leaderboard.
    """
    spec = dict(options)
    path = Path(str(spec["dataset"]))
    if path.is_file():
        uploaded = client.upload_dataset(path, label=spec.pop("label", None), task=spec.get("task"))
        spec["dataset"] = uploaded["name"]
        spec.pop("task", None)
        console.print(f"uploaded {path} as dataset {uploaded['name']!r} v{uploaded['version']}")
    created = client.create_search(spec)
    search_id = created["id"]
    console.print(f"search [bold]{search_id}[/] on {client.base_url} (study {created['study_name']})")
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                   disable=quiet)
    with bar:
        trials = bar.add_task("trials", total=None, info=created["state"])
        finals = bar.add_task("finalists", total=None, info="", visible=False)
        control = bar.add_task("control", total=None, info="", visible=False)

        def on_progress(detail: dict[str, Any]) -> None:
            p = detail["progress"]
            best = "-" if p["best_value"] is None else f"{p['best_value']:.4f} ({p['best_family']})"
            bar.update(trials, total=p["budget"], completed=p["done"],
                       info=f"{detail['state']} | pruned {p['pruned']} failed {p['failed']} | best {best}")
            if p["finalists_total"]:
                bar.update(finals, visible=True, total=p["finalists_total"],
                           completed=p["finalists_done"])
            c = p.get("control")
            if p["phase"] == "control" and c and c["target_candidate_epochs"]:
                bar.update(control, visible=True, total=c["target_candidate_epochs"],
                           completed=min(c["candidate_epochs"], c["target_candidate_epochs"]),
                           info="ReLU alone, same candidate-epochs")

        final = client.wait(search_id, on_progress)
    if final["state"] != "complete":
        console.print(f"[yellow]search {search_id} ended {final['state']}[/] {final.get('error') or ''}")
    return search_id, leaderboard_from_api(client.leaderboard(search_id))


def remote_show(client: ActsearchClient, search_id: int, console: Console) -> Leaderboard:
    detail = client.search(search_id)
    p = detail["progress"]
    console.print(f"search [bold]{detail['id']}[/] {detail['name']!r} state={detail['state']} "
                  f"study={detail['study_name']}")
    console.print(f"trials: done {p['done']}/{p['budget']}, pruned {p['pruned']}, "
                  f"failed {p['failed']}, running {p['running']}")
    if detail.get("error"):
        console.print(f"[red]error:[/] {detail['error']}")
    analysis = detail.get("analysis") or {}
    if analysis.get("state") == "failed":
        console.print(f"analysis: [red]failed[/]: {analysis.get('error')}", soft_wrap=True)
    elif analysis.get("state") in ("pending", "running"):
        console.print("analysis: [yellow]running[/] (fits, distillation)")
    elif analysis.get("state") == "done":
        console.print("analysis: done")
    return leaderboard_from_api(client.leaderboard(search_id))


def remote_curves(client: ActsearchClient, trial_id: int) -> tuple[str, Any, list[dict[str, Any]],
                                                                   list[dict[str, Any]]]:
    """A trial's curves and histograms from the API, shaped like the store's rows."""
    data = client.trial_activations(trial_id)
    curves = [{"layer": c["layer"], "epoch": c["epoch"], "params": c["params"],
               "x": np.asarray(c["x"], dtype=np.float32),
               "y": np.asarray(c["y"], dtype=np.float32).reshape(c["y_shape"])}
              for c in data["curves"]]
    stats = [{"layer": h["layer"], "epoch": h["epoch"], "hist": np.asarray(h["hist"], dtype=np.float32),
              "edges": np.asarray(h["edges"], dtype=np.float32), "dead_fraction": h["dead_fraction"] or 0.0}
             for h in data["histograms"]]
    return data["family"], data["family_params"], curves, stats
