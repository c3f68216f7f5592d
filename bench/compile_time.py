"""Compile seconds per fused family: first population vs later ones, and across processes.

    python -m bench.compile_time DIR rational,vaf,spline   # run twice with the same DIR

Each family: one eager population (K=8, 1 epoch, digits mlp:64,64), then compiled ones
(K=8, then K=16, then K=8 again); ``compile_s`` = first compiled minus the last (the
compile itself), wall seconds; ``compile_cpu_s`` the same in CPU seconds of this process
and its children (Inductor compiles C++ in worker processes): on a shared machine the
wall figure grows with the load average, the CPU figure much less, and on an idle
2-core machine a compile runs about as long as its CPU seconds. ``DIR`` is passed to
:func:`models.kernels.configure_compile_cache`: an empty one gives the cold figure, a
second process with the same one the on-disk cache's figure.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

from models import kernels


def main(argv: list[str]) -> dict[str, dict[str, float]]:
    kernels.configure_compile_cache(argv[0])
    from models.engine import train_population
    from models.sizing import tune_cpu
    from models.spec import ArchSpec, Candidate, TrainConfig

    from .engine import digits

    tune_cpu(1)
    data = digits().tensor_data()
    arch = ArchSpec.parse("mlp:64,64")
    cfg = TrainConfig(epochs=1, batch_size=128, record_epochs=0)
    out: dict[str, dict[str, float]] = {}
    for fam in argv[1].split(","):
        cpu: list[float] = []

        def run(k: int, mode: str, fam: str = fam, cpu: list[float] = cpu) -> float:
            os.environ["ACTSEARCH_COMPILE"] = mode
            t, c = time.perf_counter(), _cpu()
            train_population(arch, fam, [Candidate(seed=i, lr=3e-3) for i in range(k)], data, cfg)
            cpu.append(_cpu() - c)
            return time.perf_counter() - t

        eager = run(8, "off")
        first, second, again = run(8, "on"), run(16, "on"), run(8, "on")
        out[fam] = {"eager_s": eager, "first_compiled_s": first, "second_k16_s": second,
                    "again_k8_s": again, "compile_s": first - again,
                    "compile_cpu_s": cpu[1] - cpu[3], "second_k16_cpu_s": cpu[2] - cpu[3],
                    "loadavg": os.getloadavg()[0]}
        print(fam, json.dumps({k: round(v, 2) for k, v in out[fam].items()}), flush=True)
    return out


def _cpu() -> float:
    """CPU seconds of this process and all its descendants, live (Inductor keeps a pool of
    compile workers) or reaped."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])  # utime + stime
    mine, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - mine
        mine |= frontier
    return total + sum(ticks[p] for p in mine) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main(sys.argv[1:])
