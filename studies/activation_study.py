"""The activation study (issue #6, part 3): one command, a printed table, plots and a report.

    python -m studies.activation_study                     # small scale (<= 15 min, 2 cores)
    python -m studies.activation_study --scale full        # more seeds, epochs and searches
    python -m studies.activation_study --scale tiny --out /tmp/s   # seconds; what the test runs

Part A: fixed (relu, gelu, tanh) vs trainable (vaf, rational, spline, agsig, frelu,
affine) activations on digits, breast_cancer, wine, diabetes (R²) and a 784-feature
MNIST-shaped teacher set, the same MLP, epochs and lr grid, over seeds. Part B: a real
embedded search over those families vs a ReLU-only search with the same trial budget.
Part C: the meta-neuron claims (accuracy, convergence, width/depth, near-linear).

Writes ``<out>/results.json`` (every figure with its seeds), six PNGs in ``<out>``
and the report (``studies/REPORT.md`` for the default ``--out``, else ``<out>/REPORT.md``).
Deterministic from the seeds on one machine (timings aside).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .config import SCALES
from .summary import round_floats

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m studies.activation_study",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="small",
                   help="tiny (seconds, for the test), small (default, <= 15 min) or full")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="folder for results.json and the PNGs (default studies/results)")
    p.add_argument("--report", type=Path, default=None,
                   help="where REPORT.md goes (default: studies/REPORT.md with the default "
                        "--out, else <out>/REPORT.md)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a machine others share, two threads "
                        "contending for busy cores ran ~20x slower here)")
    p.add_argument("--replot", action="store_true",
                   help="redraw the plots and the report from <out>/results.json, no training")
    p.add_argument("--parts", default="abc",
                   help="which parts to run, e.g. 'a' or 'ac' (default abc; C needs A)")
    return p


def _validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    parts = set(args.parts.lower())
    if not parts or parts - set("abc"):
        parser.error(f"--parts takes letters from 'abc', e.g. 'ac'; got {args.parts!r}")
    if "c" in parts and "a" not in parts:
        parser.error("--parts: part C reads part A's runs; use 'ac' or 'abc'")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; give a folder")
    if args.replot and not (args.out / "results.json").is_file():
        parser.error(f"--replot needs {args.out / 'results.json'}; run the study first")


def _report_path(args: argparse.Namespace) -> Path:
    if args.report is not None:
        return args.report
    return HERE / "REPORT.md" if args.out.resolve() == DEFAULT_OUT else args.out / "REPORT.md"


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run the asked parts; the results dict (every figure with its seeds)."""
    import torch

    from .part_a import run_part_a
    from .part_b import run_part_b
    from .part_c import run_part_c
    from .report import machine_info

    torch.set_num_threads(args.threads)
    scale = SCALES[args.scale]
    parts = set(args.parts.lower())
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", file=sys.stderr, flush=True)

    machine = machine_info(args.threads)
    cache: dict[str, Any] = {}
    results: dict[str, Any] = {"scale": scale.as_dict()}
    results["part_a"] = run_part_a(scale, log, cache) if "a" in parts else {}
    if "b" in parts:
        results["part_b"] = run_part_b(scale, log, args.threads)
    if "c" in parts:
        results["part_c"] = run_part_c(scale, log, cache, results["part_a"])
    results["meta"] = {
        "command": args.command,
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "wall_s": time.perf_counter() - t0, "machine": machine,
        "load_avg_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    return round_floats(results)


def publish(results: dict[str, Any], out: Path, report: Path) -> dict[str, Path]:
    """Draw the PNGs, write results.json and the report, print the tables; returns the files."""
    from . import plots
    from .report import print_tables, write_report

    files: dict[str, Path | None] = {}
    part_a, families = results["part_a"], list(results["scale"]["families"])
    if part_a:
        files["a_curves"] = plots.plot_part_a_curves(part_a, families, out / "a_curves.png")
        files["a_final"] = plots.plot_part_a_final(part_a, families, out / "a_final.png")
    if results.get("part_b"):
        files["b_search"] = plots.plot_search_vs_relu(results["part_b"], out / "b_search.png")
    if results.get("part_c"):
        files["c_vs_fixed"] = plots.plot_vaf_vs_fixed(part_a, out / "c_vs_fixed.png")
        files["c_sweeps"] = plots.plot_sweeps(results["part_c"]["sweeps"], out / "c_sweeps.png")
        files["c_learned"] = plots.plot_learned_curves(part_a, out / "c_learned.png")
    results_path = out / "results.json"
    files["results.json"] = results_path
    done = {k: p for k, p in files.items() if p is not None}
    results["meta"]["files"] = sorted(p.name for p in done.values())
    # compact: one line per top-level part keeps diffs readable and the file small
    body = ",\n".join(f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}"
                      for k, v in results.items())
    results_path.write_text("{\n" + body + "\n}\n")
    links = {k: os.path.relpath(p, report.parent) for k, p in done.items()}
    write_report(results, links, report)
    print_tables(results)
    print(f"results: {results_path}  report: {report}  ({results['meta']['wall_s'] / 60:.1f} min)")
    return done


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or, with ``--replot``, re-read results.json), then publish; returns the results."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        results = json.loads((out / "results.json").read_text())
    else:
        results = train(args)
    publish(results, out, _report_path(args))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    _validate(args, parser)
    args.command = " ".join(["python -m studies.activation_study", *map(shlex.quote, argv)])
    run(args)


if __name__ == "__main__":
    main()
