"""``actsearch curves``, ``export`` and ``families``: learned curves, the best model, the catalogue."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .common import console, db, fail, fmt, remote

app = typer.Typer()


@app.command()
def curves(
    trial_id: int,
    out: Annotated[Path | None, typer.Option(help="PNG path (default: curves-trial-ID.png)")] = None,
) -> None:
    """Plot a trial's learned activation curves over epochs (PNG) and sketch them here."""
    import numpy as np

    from actsearch.plots import ascii_sketch, plot_curves_png
    from store import repo

    if remote["client"] is not None:
        from actsearch.remote import remote_curves

        family, family_params, rows, stats = remote_curves(remote["client"], trial_id)
        activations = remote["client"].trial_activations(trial_id)
        fits = activations.get("fits") or []
        if activations.get("network"):
            fits.append({"layer": -1, "kind": "network", "extra": activations["network"]})
    else:
        _, sessions = db()
        with sessions() as session:
            trial = repo.get_trial(session, trial_id=trial_id)
            rows = repo.trial_curves(session, trial_id=trial_id)
            stats = repo.trial_preact_stats(session, trial_id=trial_id)
            fits = repo.trial_fits(session, trial_id=trial_id)
            family, family_params = trial.family, trial.family_params
    if not rows:
        fail(f"trial {trial_id} ({family}) has no stored curves: its family mixes units "
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
        fail(f"--activations must be 'learned' or 'distilled', not {activations!r}")
    path = out or Path(f"actsearch-search-{search_id}.zip")
    if remote["client"] is not None:
        data = remote["client"].export(search_id, activations=activations)
    else:
        from search.export import export_search

        _, sessions = db()
        with sessions() as session:
            data = export_search(session, search_id=search_id, activations=activations)
    try:
        path.write_bytes(data)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")
    meta = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("meta.json"))
    note = ""
    d = meta.get("distillation")
    if d:
        note = (f"; distilled: validation {meta['metric']} {fmt(d['validation_before'])} -> "
                f"{fmt(d['validation_after'])}")
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


