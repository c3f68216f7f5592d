"""Seconds from the ``actsearch search`` command to its first finished epoch (issue #13).

    python -m bench.first_epoch                      # 3 runs each: fresh ACTSEARCH_HOME, warm one
    python -m bench.first_epoch --runs 5 --code /work/main   # another checkout (before/after)

Each run starts ``actsearch search --dataset digits --trials 8 --epochs 2 --families relu
--json`` as a new process and measures, on the machine's monotonic clock (shared by
all processes), the time from just before the process is started to the moment the
coordinator handles the first epoch report (a ``sitecustomize`` hook wraps the
coordinator's per-epoch heartbeat, so it measures any checkout the same way, with or
without its own ``timings``), and the whole command. **fresh**: an empty
ACTSEARCH_HOME (migrations, the built-in dataset registered, no compile cache);
**warm**: a home where the same search ran once before. Prints one JSON line per run
and a summary (median, min, max) with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = ["search", "--dataset", "digits", "--trials", "8", "--epochs", "2",
           "--families", "relu", "--json"]

HOOK = '''
import importlib.abc, importlib.machinery, os, sys, time
_path = os.environ.get("ACTSEARCH_FIRST_EPOCH_FILE")


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "search.coordinator.local":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)
            cls = module.EmbeddedCoordinator
            beat = cls._heartbeat

            def _heartbeat(self, job):
                global _path
                if _path:
                    with open(_path, "w") as fh:
                        fh.write(repr(time.monotonic()))
                    _path = None
                return beat(self, job)

            cls._heartbeat = _heartbeat

        spec.loader.exec_module = exec_module
        return spec


if _path:
    sys.meta_path.insert(0, _Hook())
'''


def one_run(code: Path, home: Path, python: str, hook_dir: Path) -> dict[str, float | None]:
    marker = home / "first-epoch.txt"
    marker.unlink(missing_ok=True)
    env = dict(os.environ, ACTSEARCH_HOME=str(home), PYTHONPATH=f"{hook_dir}:{code}",
               ACTSEARCH_FIRST_EPOCH_FILE=str(marker))
    script = Path(python).parent / "actsearch"
    t0 = time.monotonic()
    out = subprocess.run([python, str(script), *COMMAND], env=env, capture_output=True,
                         text=True, timeout=600, check=False)
    total = time.monotonic() - t0
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    first = float(marker.read_text()) - t0 if marker.exists() else None
    own = json.loads(out.stdout).get("timings") or {}
    return {"first_epoch_s": None if first is None else round(first, 3),
            "total_s": round(total, 3), "reported_first_epoch_s": own.get("first_epoch_s"),
            "reported": own}


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, float | None]]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the checkout to measure (put first on PYTHONPATH)")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--modes", default="fresh,warm")
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, float | None]]] = {}
    with tempfile.TemporaryDirectory(prefix="actsearch-first-epoch-") as tmp:
        hook_dir = Path(tmp) / "hook"
        hook_dir.mkdir()
        (hook_dir / "sitecustomize.py").write_text(HOOK)
        warm_home = Path(tmp) / "warm"
        warm_home.mkdir()
        modes = args.modes.split(",")
        if "warm" in modes:
            one_run(args.code, warm_home, args.python, hook_dir)  # makes the home warm
        for i in range(args.runs):
            for mode in modes:  # interleaved: a load change hits both alike
                home = warm_home if mode == "warm" else Path(tmp) / f"fresh{i}"
                home.mkdir(exist_ok=True)
                row = one_run(args.code, home, args.python, hook_dir)
                row["loadavg"] = round(os.getloadavg()[0], 2)
                results.setdefault(mode, []).append(row)
                print(mode, json.dumps(row), flush=True)
    for mode, rows in results.items():
        firsts = [r["first_epoch_s"] for r in rows if r["first_epoch_s"] is not None]
        totals = [r["total_s"] for r in rows]
        print(f"{mode}: first epoch median {statistics.median(firsts):.2f} s "
              f"(min {min(firsts):.2f}, max {max(firsts):.2f}); whole command median "
              f"{statistics.median(totals):.2f} s; load average "
              f"{min(r['loadavg'] for r in rows)}-{max(r['loadavg'] for r in rows)}", flush=True)
    return results


if __name__ == "__main__":
    main()
