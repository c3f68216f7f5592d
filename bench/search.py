"""Whole searches: the optuna-examples loop against ``actsearch search``, in one run (issue #13).

    python -m bench.search                             # all four workloads, CPU
    python -m bench.search --workloads small,digits    # some of them
    python -m bench.search --quick --workloads small   # a smoke run (~1 minute on 2 cores)
    python -m bench.search --device cuda               # GPU: the 60,000 x 784 workload

For each workload (bench/workloads.py), on one machine, in this order:

1. **ceiling**: the matmul peak (``torch.matmul`` 1024x1024 fp32 on CPU, 4096x4096 on
   GPU, best of several) against one step of the loop at the workload's batch size
   (ReLU, forward + loss + backward + Adam on one fixed batch, median of many): the
   loop's share of the peak, and ``1 / share``, the most a fused engine can gain
   for the same work. Also the loop's step through its ``DataLoader`` (for reference).
2. **loop**: :func:`bench.optuna_loop.run_loop` (TPE + median pruner, one trial at a
   time, the fixed activations torch.nn has), same trials, epochs, widths and batch
   size, on exactly the rows and scaling actsearch trains on.
3. **actsearch relu** and **actsearch default**: ``actsearch search --spec S --json`` as
   a whole process, in a fresh ``ACTSEARCH_HOME``, ``families`` ``[relu]`` and then the
   default families, ``finalist_seeds`` 3; timed from ``Popen`` until the leaderboard
   (the JSON line) is printed. Then its SQLite database gives K and the families per
   population and the breakdown (:func:`breakdown`).

The last line printed is one JSON object with every figure; it is also written to
``bench/results/search-<timestamp>.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BATCH = 128
FINALIST_SEEDS = 3
#: A dataset NPZ of the 60,000 x 784 workload is ~190 MB: above the 200 MiB upload
#: limit once stored with its metadata is not the point of this bench, so it is raised.
UPLOAD_LIMIT = str(2 << 30)
QUICK_TRIALS, QUICK_EPOCHS = 16, 2


# =========================================================================== the database
def _when(value: Any) -> float | None:
    """A stored timestamp (SQLite text, UTC; or a datetime) as POSIX seconds."""
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        dt = datetime.fromisoformat(str(value))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _json(value: Any) -> Any:
    if value is None or not isinstance(value, str | bytes):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _rows(con: sqlite3.Connection, table: str, where: str = "", args: Sequence[Any] = ()
          ) -> list[dict[str, Any]]:
    """Every column of the rows (``SELECT *``): columns a later migration adds come along,
    and a database from before them simply lacks those keys."""
    cur = con.execute(f"SELECT * FROM {table} {where}", tuple(args))  # noqa: S608 - our names
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


@dataclass
class Snapshot:
    """What one search left in its database, as plain dicts (times as POSIX seconds)."""

    search: dict[str, Any]
    populations: list[dict[str, Any]]
    trials: list[dict[str, Any]]
    #: trial id -> its epoch rows
    epochs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


_TIME_KEYS = ("created_at", "started_at", "finished_at", "heartbeat_at",
              "analysis_started_at", "analysis_finished_at")
_JSON_KEYS = ("spec", "best", "structural", "trial_numbers", "families", "source_trial_numbers",
              "family_params", "hparams")


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    for key in _TIME_KEYS:
        if key in row:
            row[key] = _when(row[key])
    for key in _JSON_KEYS:
        if key in row:
            row[key] = _json(row[key])
    return row


def read_db(path: Path, search_id: int | None = None) -> Snapshot:
    """Read one search (the last one when ``search_id`` is None) from an actsearch SQLite file.

    Plain ``sqlite3`` and ``SELECT *``: the bench reads the database of the actsearch it
    ran whatever its migration (``actsearch_populations.families``,
    ``actsearch_searches.analysis_state`` and any analysis timestamps are read where present).
    """
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if search_id is None:
            found = con.execute("SELECT max(id) FROM actsearch_searches").fetchone()
            if found is None or found[0] is None:
                raise LookupError(f"no search in {path}")
            search_id = int(found[0])
        searches = _rows(con, "actsearch_searches", "WHERE id = ?", [search_id])
        if not searches:
            raise LookupError(f"no search {search_id} in {path}")
        pops = _rows(con, "actsearch_populations", "WHERE search_id = ? ORDER BY id", [search_id])
        trials = _rows(con, "actsearch_trials", "WHERE search_id = ? ORDER BY id", [search_id])
        epochs: dict[int, list[dict[str, Any]]] = {}
        for e in _rows(con, "actsearch_epoch_metrics",
                       "WHERE trial_id IN (SELECT id FROM actsearch_trials WHERE search_id = ?) "
                       "ORDER BY trial_id, epoch", [search_id]):
            epochs.setdefault(int(e["trial_id"]), []).append(e)
    finally:
        con.close()
    return Snapshot(_clean(searches[0]), [_clean(p) for p in pops], [_clean(t) for t in trials],
                    epochs)


# =========================================================================== the breakdown
def union_length(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length covered by the intervals (overlaps counted once)."""
    total, end = 0.0, -math.inf
    for a, b in sorted((a, b) for a, b in intervals if b > a):
        if a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def slot_families(pop: dict[str, Any]) -> list[str]:
    """The family of each candidate slot: ``families`` of a mixed population, else ``family`` x K."""
    fams = pop.get("families")
    if isinstance(fams, list) and fams:
        return [str(f) for f in fams]
    return [str(pop["family"])] * int(pop["k"])


def population_label(pop: dict[str, Any]) -> str:
    """``relu`` for one family, ``mixed(relu 4, elu 4, ...)`` for a mixed population."""
    fams = slot_families(pop)
    if len(set(fams)) == 1 and pop.get("family") != "mixed":
        return fams[0]
    counts: dict[str, int] = {}
    for f in fams:
        counts[f] = counts.get(f, 0) + 1
    return "mixed(" + ", ".join(f"{f} {n}" for f, n in counts.items()) + ")"


def compact(values: Sequence[int]) -> str:
    """``[32, 32, 32, 16]`` -> ``32x3,16`` (runs of equal values)."""
    out: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i]:
            j += 1
        out.append(f"{values[i]}x{j - i}" if j - i > 1 else str(values[i]))
        i = j
    return ",".join(out) or "-"


def _engine_seconds(snap: Snapshot, pop_id: int) -> tuple[float | None, float | None]:
    """(first epoch's elapsed_s, last elapsed_s) over the population's candidates.

    ``elapsed_s`` counts from the engine's start (after the population was claimed and
    its data sent), so the last one is the engine's training time of the population.
    """
    firsts, lasts = [], []
    for t in snap.trials:
        if t.get("population_id") != pop_id:
            continue
        rows = [e for e in snap.epochs.get(int(t["id"]), []) if e.get("elapsed_s") is not None]
        if rows:
            firsts.append(min(float(e["elapsed_s"]) for e in rows))
            lasts.append(max(float(e["elapsed_s"]) for e in rows))
    return (min(firsts) if firsts else None), (max(lasts) if lasts else None)


def breakdown(snap: Snapshot, *, t0: float, end: float, target: float | None = None,
              exit_at: float | None = None) -> dict[str, Any]:
    """Where one ``actsearch search`` process spent its wall time, from its database.

    Args:
        snap: the search's rows (:func:`read_db`).
        t0: POSIX time of the command's start (``Popen``).
        end: POSIX time the leaderboard was printed (the wall time's end).
        target: a value to reach (the loop's final best): ``time_to_quality_s`` is the
            earliest ``finished_at`` of a complete trial (search or finalist) at least
            that good, from ``t0``.
        exit_at: POSIX time the process exited (if after ``end``).

    Figures (seconds; None where the rows do not say):

    * ``startup_s``: ``t0`` -> the first population's ``started_at`` (imports, dataset
      load and storage, study creation, planning);
    * ``first_epoch_s``: ``t0`` -> the first finished epoch. A population's
      ``started_at`` is its claim, before its data reach the training process, so the
      epoch is placed back from the population's end: ``finished_at - (last elapsed_s -
      first elapsed_s)`` (an upper bound: it includes the recording of that population);
      ``first_epoch_lo_s`` is the lower bound ``started_at + first elapsed_s``;
    * ``first_training_s``: ``t0`` -> the first engine start (``finished_at - last
      elapsed_s``, an upper bound as above): start-up plus the first population's own
      wait (its training process starting, its data arriving);
    * ``populations_s``: the union of the populations' ``[started_at, finished_at]``
      (claim to recorded: asking, data, training, telling, recording);
    * ``training_s``: the union of the engine's own intervals ``[finished_at - last
      elapsed_s, finished_at]`` (training and per-epoch validation only);
    * ``analysis_s``: from ``analysis_started_at``/``analysis_finished_at`` where the
      search row has them, else None (``analysis_state`` alone carries no time);
      ``analysis_in_wall_s`` is its part before ``end``;
    * ``coordination_s``: the rest: ``wall - startup - training - analysis_in_wall``;
    * ``tail_s``: the last population's ``finished_at`` -> ``end`` (test scoring, any
      analysis run before the leaderboard, the leaderboard itself).
    """
    wall = end - t0
    pops = [p for p in snap.populations if p.get("started_at") is not None]
    started = [p for p in pops if p.get("finished_at") is not None]
    out: dict[str, Any] = {"wall_s": wall, "exit_s": (exit_at - t0) if exit_at else None}
    out["startup_s"] = (min(p["started_at"] for p in pops) - t0) if pops else None
    spans, engine_spans, first_hi, first_lo = [], [], [], []
    per_pop = []
    for p in snap.populations:
        first, last = _engine_seconds(snap, int(p["id"]))
        s, f = p.get("started_at"), p.get("finished_at")
        if s is not None and f is not None:
            spans.append((s, f))
        if f is not None and last is not None:
            engine_spans.append((f - last, f))
        if s is not None and first is not None:
            first_lo.append(s + first - t0)
        if f is not None and first is not None and last is not None:
            first_hi.append(f - (last - first) - t0)
        per_pop.append({
            "id": p["id"], "phase": p.get("phase"), "k": p.get("k"), "family": p.get("family"),
            "families": p.get("families"), "label": population_label(p), "state": p.get("state"),
            "rung": p.get("rung"), "epochs": p.get("epochs"),
            "started_s": (s - t0) if s is not None else None,
            "finished_s": (f - t0) if f is not None else None, "engine_s": last,
        })
    out["first_epoch_s"] = min(first_hi) if first_hi else None
    out["first_epoch_lo_s"] = min(first_lo) if first_lo else None
    out["first_training_s"] = (min(a for a, _ in engine_spans) - t0) if engine_spans else None
    out["populations_s"] = union_length(spans)
    out["training_s"] = union_length(engine_spans)
    a0, a1 = snap.search.get("analysis_started_at"), snap.search.get("analysis_finished_at")
    out["analysis_state"] = snap.search.get("analysis_state")
    out["analysis_s"] = (a1 - a0) if (a0 is not None and a1 is not None) else None
    out["analysis_in_wall_s"] = (max(0.0, min(a1, end) - max(a0, t0))
                                 if out["analysis_s"] is not None else None)
    out["coordination_s"] = wall - (out["startup_s"] or 0.0) - out["training_s"] \
        - (out["analysis_in_wall_s"] or 0.0)
    out["tail_s"] = (end - max(p["finished_at"] for p in started)) if started else None

    search_k = [int(p["k"]) for p in snap.populations if p.get("phase") == "search"]
    final_k = [int(p["k"]) for p in snap.populations if p.get("phase") == "finalist"]
    out["k_search"], out["k_finalist"] = search_k, final_k
    out["k_max"] = max(search_k, default=None)
    out["mixed_populations"] = sum(1 for p in per_pop if p["label"].startswith("mixed"))
    out["populations"] = per_pop

    done = [t for t in snap.trials if t.get("state") == "complete" and t.get("value") is not None
            and t.get("finished_at") is not None and math.isfinite(float(t["value"]))]
    search_done = [t for t in done if t.get("phase") == "search"]
    out["trials"] = {s: sum(1 for t in snap.trials if t.get("state") == s)
                     for s in ("complete", "pruned", "failed", "running")}
    out["best_search_value"] = max((float(t["value"]) for t in search_done), default=None)
    out["best_value"] = max((float(t["value"]) for t in done), default=None)
    if out["best_value"] is not None:
        out["time_to_own_best_s"] = min(t["finished_at"] for t in done
                                        if float(t["value"]) >= out["best_value"]) - t0
    else:
        out["time_to_own_best_s"] = None
    out["time_to_quality_s"] = None
    if target is not None:
        hits = [t["finished_at"] for t in done if float(t["value"]) >= target - 1e-12]
        out["time_to_quality_s"] = (min(hits) - t0) if hits else None
    out["devices"] = sorted({str(t["device"]) for t in snap.trials if t.get("device")})
    return out


def phase_tests(snap: Snapshot) -> dict[str, dict[str, list[float]]]:
    """phase -> family -> test values of its complete trials (those scored on test), by trial id."""
    out: dict[str, dict[str, list[float]]] = {}
    for t in snap.trials:
        value = t.get("test_value")
        if t.get("state") != "complete" or value is None or not math.isfinite(float(value)):
            continue
        out.setdefault(str(t.get("phase")), {}).setdefault(str(t["family"]), []).append(
            float(value))
    return out


def candidate_epochs(snap: Snapshot) -> dict[str, int]:
    """phase -> candidate-epochs trained (epoch rows of its trials, pruned ones included)."""
    out: dict[str, int] = {}
    for t in snap.trials:
        phase = str(t.get("phase"))
        out[phase] = out.get(phase, 0) + len(snap.epochs.get(int(t["id"]), []))
    return out


# =========================================================================== actsearch runs
def actsearch_command() -> list[str]:
    """The ``actsearch`` console script beside this interpreter (as a user runs it)."""
    script = Path(sys.executable).with_name("actsearch")
    if script.exists():
        return [str(script)]
    found = shutil.which("actsearch")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from actsearch.cli import main; sys.exit(main())"]


def _env(home: Path, device: str) -> dict[str, str]:
    env = dict(os.environ)
    env["ACTSEARCH_HOME"] = str(home)
    env.pop("ACTSEARCH_DATABASE_URL", None)  # embedded SQLite under the fresh home
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["ACTSEARCH_LIMITS__MAX_UPLOAD_BYTES"] = UPLOAD_LIMIT
    # The loop runs at the bench's priority; actsearch's training children default to
    # nice 10, which on a machine others use would slow them against the loop.
    env.setdefault("ACTSEARCH_TRAINING__NICE", "0")
    # Embedded mode trains on ACTSEARCH_WORKER__DEVICE, "auto" (a visible GPU) by default:
    # set it always, so actsearch trains where the loop does.
    env["ACTSEARCH_WORKER__DEVICE"] = device
    return env


def run_actsearch(npz: Path, *, arch: str, trials: int, epochs: int, batch_size: int,
                  families: list[str] | None, workdir: Path, device: str = "cpu",
                  target: float | None = None, seed: int = 0, keep: bool = False,
                  timeout_s: float | None = None,
                  spec_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ``actsearch search --spec S --json`` as a whole process; its figures and breakdown.

    ``spec_extra``: more spec keys (``allocation``, ``control``, ...). Besides the
    leaderboard's winner, the result carries the board's ``control`` (None when the spec
    asked for none), ``tests`` (phase -> family -> the test values of its complete
    trials, from the database: the finalist seeds' test metrics) and
    ``candidate_epochs`` (phase -> epoch rows trained: the compute each phase spent).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="home-", dir=workdir))
    spec: dict[str, Any] = {"dataset": str(npz.resolve()), "label": "y", "architecture": arch,
                            "trials": trials, "epochs": epochs, "batch_size": batch_size,
                            "finalist_seeds": FINALIST_SEEDS, "seed": seed}
    if families is not None:
        spec["families"] = families
    spec.update(spec_extra or {})
    spec_path = home / "spec.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [*actsearch_command(), "search", "--spec", str(spec_path), "--json"]
    lines: list[tuple[float, str]] = []
    err_path = home / "stderr.txt"
    with open(err_path, "wb") as err:
        t0_wall = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=_env(home, device),
                                cwd=home)
        assert proc.stdout is not None

        def read(stream: Any = proc.stdout) -> None:
            for raw in stream:
                lines.append((time.perf_counter(), raw.decode("utf-8", "replace")))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        t_exit = time.perf_counter()
        reader.join(timeout=10)
    board, t_board = None, None
    for at, text in lines:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict) and "rows" in doc:
            board, t_board = doc, at
    if rc != 0 or board is None:
        tail = err_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"actsearch search exited {rc} without a leaderboard: {' '.join(cmd)}"
                           f"\n--- stderr (tail) ---\n{tail}")
    assert t_board is not None
    snap = read_db(home / "actsearch.db", board.get("search_id"))
    parts = breakdown(snap, t0=t0_wall, end=t0_wall + (t_board - t0), target=target,
                      exit_at=t0_wall + (t_exit - t0))
    rows = board.get("rows") or []
    winner = rows[0] if rows else {}
    result = {
        "families": families or "default", "spec": spec, "command": " ".join(cmd),
        "state": board.get("state"), "search_id": board.get("search_id"),
        "wall_s": parts["wall_s"], "exit_s": parts["exit_s"],
        "winner": {k: winner.get(k) for k in ("family", "mean", "ci95", "n_seeds", "test_mean",
                                               "test_ci95", "best_search_value")},
        "leaderboard": [{k: r.get(k) for k in ("family", "mean", "ci95", "n_seeds",
                                               "best_search_value", "search_trials",
                                               "search_pruned", "test_mean")} for r in rows],
        "breakdown": parts,
        "control": board.get("control"),
        "tests": phase_tests(snap),
        "candidate_epochs": candidate_epochs(snap),
    }
    if not keep:
        shutil.rmtree(home, ignore_errors=True)
    else:
        result["home"] = str(home)
    return result


# =========================================================================== ceiling
def _flops_per_step(layers: Sequence[int], n_out: int, batch: int) -> float:
    """Matmul FLOPs of one training step: 2 x batch x weights, times 3 (forward + backward)."""
    dims = [*layers, n_out]
    return 3 * 2 * batch * sum(a * b for a, b in zip(dims[:-1], dims[1:], strict=True))


def measure_ceiling(X: Any, y: Any, *, hidden: Sequence[int], n_out: int, task: str,
                    batch: int, device: str, peak: float, steps: int = 60) -> dict[str, Any]:
    """The loop's step against the matmul peak: its share and the most a fused engine can gain."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from .optuna_loop import _sync, _tensors, build_model, train_step

    dev = torch.device(device)
    x_t, y_t = _tensors(X, y, task)
    torch.manual_seed(0)
    model = build_model(x_t.shape[1], hidden, n_out, "relu").to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xb, yb = x_t[:batch].to(dev), y_t[:batch].to(dev)
    for _ in range(10):
        train_step(model, opt, xb, yb, task)
    samples = []
    for _ in range(5):  # median of blocks of steps, best block
        _sync(dev)
        t = time.perf_counter()
        for _ in range(max(1, steps // 5)):
            train_step(model, opt, xb, yb, task)
        _sync(dev)
        samples.append((time.perf_counter() - t) / max(1, steps // 5))
    step_s = min(samples)
    loader = DataLoader(TensorDataset(x_t, y_t), batch_size=batch, shuffle=True)
    n_loader, t = 0, time.perf_counter()
    for data, target in loader:
        train_step(model, opt, data.to(dev), target.to(dev), task)
        n_loader += 1
        if n_loader >= steps:
            break
    _sync(dev)
    loader_step_s = (time.perf_counter() - t) / max(1, n_loader)
    flops = _flops_per_step([x_t.shape[1], *hidden], n_out, batch)
    share = flops / step_s / peak
    return {"layers": [int(x_t.shape[1]), *hidden, n_out], "batch": batch, "step_s": step_s,
            "step_flops": flops, "step_flops_per_s": flops / step_s, "peak_fraction": share,
            "max_speedup": 1.0 / share if share > 0 else None,
            "loader_step_s": loader_step_s, "loader_peak_fraction": flops / loader_step_s / peak}


# =========================================================================== one workload
def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: r["wall_s"])


def run_workload(name: str, *, quick: bool, device: str, peak: float, data_dir: Path,
                 workdir: Path, repeats: int, skip_loop: bool, batch: int,
                 trials: int | None, epochs: int | None, keep: bool,
                 log: Any = None) -> dict[str, Any]:
    from .optuna_loop import run_loop
    from .workloads import WORKLOADS, load_splits, write_npz

    def say(text: str) -> None:
        print(f"[bench.search] {name}: {text}", file=log or sys.stderr, flush=True)

    w = WORKLOADS[name]
    n_trials = trials or (QUICK_TRIALS if quick else w.trials)
    n_epochs = epochs or (QUICK_EPOCHS if quick else w.epochs)
    npz = write_npz(w, data_dir, quick=quick)
    s = load_splits(npz)  # the spec's seed 0 and 15/15 fractions: actsearch's own split
    n_out = s.n_classes or 1
    say(f"{len(s.X_train)} train / {len(s.X_val)} val / {len(s.X_test)} test rows, "
        f"{w.arch}, {n_trials} trials x {n_epochs} epochs, batch {batch}")
    ceiling = measure_ceiling(s.X_train, s.y_train, hidden=w.hidden, n_out=n_out, task=s.task,
                              batch=batch, device=device, peak=peak)
    say(f"ceiling: loop step {1e3 * ceiling['step_s']:.2f} ms = "
        f"{100 * ceiling['peak_fraction']:.1f}% of peak -> at most "
        f"{ceiling['max_speedup']:.1f}x for the same work")
    loops: list[dict[str, Any]] = []
    searches: dict[str, list[dict[str, Any]]] = {"relu": [], "default": []}
    for rep in range(repeats):
        if not skip_loop:
            res = run_loop(s.X_train, s.y_train, s.X_val, s.y_val, hidden=w.hidden,
                           trials=n_trials, epochs=n_epochs, batch_size=batch, task=s.task,
                           seed=0, X_test=s.X_test, y_test=s.y_test, n_outputs=n_out,
                           device=device)
            loops.append(res.as_dict())
            say(f"loop (run {rep + 1}): {res.wall_s:.1f} s, best {_f(res.best_value, '.4f')} at "
                f"{_f(res.time_to_best_s, '.1f')} s ({res.n_complete} complete, "
                f"{res.n_pruned} pruned)")
        target = max((r["best_value"] for r in loops if r["best_value"] is not None), default=None)
        for key, fams in (("relu", ["relu"]), ("default", None)):
            r = run_actsearch(npz, arch=w.arch, trials=n_trials, epochs=n_epochs,
                              batch_size=batch, families=fams, workdir=workdir, device=device,
                              target=target, keep=keep)
            searches[key].append(r)
            b = r["breakdown"]
            say(f"actsearch {key} (run {rep + 1}): {r['wall_s']:.1f} s, best "
                f"{_f(b['best_value'], '.4f')}, K {compact(b['k_search'])}")
    loop = _best(loops) if loops else None
    out: dict[str, Any] = {
        "workload": name, "description": w.description, "arch": w.arch,
        "layers": w.layers_text(), "rows": int(len(s.X_train) + len(s.X_val) + len(s.X_test)),
        "train_rows": int(len(s.X_train)), "val_rows": int(len(s.X_val)),
        "test_rows": int(len(s.X_test)), "trials": n_trials, "epochs": n_epochs,
        "batch": batch, "metric": "accuracy" if s.task == "classification" else "r2",
        "ceiling": ceiling, "loop": loop, "loop_runs": loops,
    }
    for key, runs in searches.items():
        best = dict(_best(runs))
        if loop is not None:
            b = best["breakdown"]
            best["speedup"] = loop["wall_s"] / best["wall_s"]
            ttq = b["time_to_quality_s"]
            best["time_to_quality_speedup"] = (loop["time_to_best_s"] / ttq
                                               if ttq and loop["time_to_best_s"] else None)
        best["runs_wall_s"] = [r["wall_s"] for r in runs]
        out[key] = best
    return out


# =========================================================================== report
def _f(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


COLUMNS = (f"{'workload':<11} {'path':<18} {'wall s':>8} {'x loop':>7} {'best val':>9} "
           f"{'final':>7} {'test':>6} {'t->q s':>7} {'x loop':>7} {'start':>6} {'1st ep':>6} "
           f"{'train':>7} {'coord':>7} {'tail':>6} {'anal.':>6}  K search | finalists")


def print_table(result: dict[str, Any]) -> None:
    print(COLUMNS)
    print("-" * len(COLUMNS))
    for w in result["workloads"]:
        c = w["ceiling"]
        loop = w["loop"]
        if loop is not None:
            print(f"{w['workload']:<11} {'optuna loop':<18} {loop['wall_s']:>8.1f} {1.0:>7.2f} "
                  f"{_f(loop['best_value'], '.4f'):>9} {'':>7} {_f(loop['test_value'], '.3f'):>6} "
                  f"{_f(loop['time_to_best_s'], '.1f'):>7} {1.0:>7.2f}")
        for key in ("relu", "default"):
            r = w[key]
            b = r["breakdown"]
            label = "actsearch relu" if key == "relu" else "actsearch default"
            name = w["workload"] if loop is None and key == "relu" else ""
            print(f"{name:<11} {label:<18} {r['wall_s']:>8.1f} {_f(r.get('speedup')):>7} "
                  f"{_f(b['best_value'], '.4f'):>9} {_f(r['winner'].get('mean'), '.4f'):>7} "
                  f"{_f(r['winner'].get('test_mean'), '.3f'):>6} "
                  f"{_f(b['time_to_quality_s'], '.1f'):>7} "
                  f"{_f(r.get('time_to_quality_speedup')):>7} {_f(b['startup_s'], '.1f'):>6} "
                  f"{_f(b['first_epoch_s'], '.1f'):>6} {_f(b['training_s'], '.1f'):>7} "
                  f"{_f(b['coordination_s'], '.1f'):>7} {_f(b['tail_s'], '.1f'):>6} "
                  f"{_f(b['analysis_s'], '.1f'):>6}  {compact(b['k_search'])} | "
                  f"{compact(b['k_finalist'])}")
            if b["mixed_populations"]:
                mixed = [p["label"] for p in b["populations"] if p["label"].startswith("mixed")]
                print(f"{'':<30} mixed populations: {b['mixed_populations']} (first: {mixed[0]})")
        print(f"{'':<11} ceiling: {w['layers']} -> {c['layers'][-1]}, batch {c['batch']}: loop step "
              f"{1e3 * c['step_s']:.2f} ms = {100 * c['peak_fraction']:.1f}% of peak, so at most "
              f"{_f(c['max_speedup'], '.1f')}x for the same work (through its DataLoader "
              f"{1e3 * c['loader_step_s']:.2f} ms, {100 * c['loader_peak_fraction']:.1f}%)")
    peak = result["peak"]
    print()
    print(f"peak: torch.matmul {peak['n']}x{peak['n']} {peak['dtype']}: "
          f"{peak['flops_per_s'] / 1e9:.1f} GFLOP/s; {result['machine']}; torch threads "
          f"{result['threads']}; load average {result['loadavg_start']} -> {result['loadavg_end']}")
    devices = sorted({d for w in result["workloads"] for k in ("relu", "default")
                      for d in w[k]["breakdown"]["devices"]})
    print(f"actsearch trained on: {', '.join(devices) or '-'}; loop on {result['device']}")
    print("best val: best single trial (search or finalist re-run); final: the leaderboard "
          "winner's mean over its seeds; test: the loop's best trial / actsearch's winner; "
          "t->q: until actsearch held a trial at least the loop's best (loop: until it held "
          "its own best); start: command -> first population claimed; 1st ep: command -> "
          "first finished epoch (upper bound); train: engine time; coord: the rest of the "
          "wall (incl. tail: last population -> leaderboard); anal.: analysis timestamps "
          "(- when the database has none)")
    if result.get("targets"):
        print()
        print("targets (issue #13)" + (" -- quick run, not the issue's configuration"
                                       if result["quick"] else "") + ":")
        for t in result["targets"]:
            state = "-" if t["met"] is None else ("met" if t["met"] else "NOT met")
            print(f"  {t['target']:<62} {t['value']:<28} {state}")


def targets(workloads: list[dict[str, Any]], device: str) -> list[dict[str, Any]]:
    """The issue's targets against this run's figures (None: not measured here)."""
    by = {w["workload"]: w for w in workloads}
    out: list[dict[str, Any]] = []

    def add(target: str, value: str, met: bool | None) -> None:
        out.append({"target": target, "value": value, "met": met})

    if "teacher256" in by and by["teacher256"]["loop"] is not None:
        w = by["teacher256"]
        d, loop = w["default"], w["loop"]
        ok = d["breakdown"]["best_value"] is not None and loop["best_value"] is not None \
            and d["breakdown"]["best_value"] >= loop["best_value"]
        add("teacher256: default >= 3x the loop, best val no worse",
            f"{_f(d.get('speedup'))}x, {_f(d['breakdown']['best_value'], '.4f')} vs "
            f"{_f(loop['best_value'], '.4f')}", bool(d.get("speedup", 0) >= 3 and ok))
    if "mnist784" in by and by["mnist784"]["loop"] is not None:
        d = by["mnist784"]["default"]
        add("mnist784: default >= 1.3x the loop (same work)", f"{_f(d.get('speedup'))}x",
            bool(d.get("speedup", 0) >= 1.3))
        q = d.get("time_to_quality_speedup")
        add("mnist784: time to quality >= 5x the loop's time to its best", f"{_f(q)}x",
            None if q is None and d["breakdown"]["time_to_quality_s"] is None else bool(q and q >= 5))
    if "small" in by and by["small"]["loop"] is not None:
        d = by["small"]["default"]
        add("small: default no slower than the loop", f"{_f(d.get('speedup'))}x",
            bool(d.get("speedup", 0) >= 1.0))
    if device == "cpu" and workloads:
        ks = {w["workload"]: w["default"]["breakdown"]["k_max"] for w in workloads}
        add("default search trains populations of K >= 32 on CPU",
            ", ".join(f"{n} {k}" for n, k in ks.items()),
            all(k is not None and k >= 32 for k in ks.values()))
    if workloads:
        firsts = {w["workload"]: w["default"]["breakdown"]["first_epoch_s"] for w in workloads}
        add("first epoch within 3 s of the command (default search)",
            ", ".join(f"{n} {_f(v, '.1f')} s" for n, v in firsts.items()),
            all(v is not None and v <= 3.0 for v in firsts.values()))
    return out


def _machine(device: str) -> str:
    import torch

    from .engine import machine

    return machine(torch.device(device))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from .workloads import WORKLOADS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--workloads", default=None,
                   help=f"comma-separated, from {','.join(WORKLOADS)} (default: all on CPU, "
                        "mnist784 with --device cuda)")
    p.add_argument("--device", default="cpu", help="where the loop trains: cpu or cuda")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_TRIALS} trials x {QUICK_EPOCHS} epochs and smaller sets: a smoke run")
    p.add_argument("--skip-loop", action="store_true", help="actsearch only (no ratios)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each path; best wall kept")
    p.add_argument("--batch-size", type=int, default=BATCH)
    p.add_argument("--trials", type=int, default=None, help="override every workload's trials")
    p.add_argument("--epochs", type=int, default=None, help="override every workload's epochs")
    p.add_argument("--data-dir", type=Path,
                   default=Path(tempfile.gettempdir()) / "actsearch-bench-data",
                   help="where the workloads' NPZ files are made (and reused)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON result path (default bench/results/search-<timestamp>.json)")
    p.add_argument("--keep", action="store_true", help="keep each run's ACTSEARCH_HOME")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the loop and of actsearch's training (ACTSEARCH_THREADS); "
                        "default: ACTSEARCH_THREADS if set, else os.cpu_count(), as actsearch")
    args = p.parse_args(argv)

    os.environ.setdefault("ACTSEARCH_LIMITS__MAX_UPLOAD_BYTES", UPLOAD_LIMIT)
    import torch

    from .engine import matmul_peak

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda asked for, but CUDA is not available here")
    names = [n.strip() for n in (args.workloads or ("mnist784" if device.type == "cuda"
                                                      else ",".join(WORKLOADS))).split(",")
             if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        p.error(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    # actsearch's training child takes os.cpu_count() torch threads, or ACTSEARCH_THREADS
    # (read by the engine's tune_cpu): the loop gets the same.
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be at least 1")
        os.environ["ACTSEARCH_THREADS"] = str(args.threads)
    env_threads = os.environ.get("ACTSEARCH_THREADS")
    torch.set_num_threads(max(1, int(env_threads) if env_threads else (os.cpu_count() or 1)))
    load_start = [round(v, 2) for v in os.getloadavg()]
    peak = matmul_peak(device, torch.float32)
    workdir = Path(tempfile.mkdtemp(prefix="bench-search-"))
    try:
        workloads = [run_workload(n, quick=args.quick, device=str(device),
                                  peak=peak["flops_per_s"], data_dir=args.data_dir,
                                  workdir=workdir, repeats=args.repeats,
                                  skip_loop=args.skip_loop, batch=args.batch_size,
                                  trials=args.trials, epochs=args.epochs, keep=args.keep)
                     for n in names]
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = {
        "bench": "search", "device": str(device), "machine": _machine(str(device)),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "quick": args.quick,
        "repeats": args.repeats, "finalist_seeds": FINALIST_SEEDS,
        "loadavg_start": load_start, "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "peak": peak,
        "workloads": workloads,
    }
    result["targets"] = targets(workloads, str(device.type))
    print_table(result)
    out = args.out or RESULTS / f"search-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    print(f"written: {out}")
    print(json.dumps(result, default=float))
    return result


if __name__ == "__main__":
    main()
