"""Compile seconds per fused family: first population vs later ones, and across processes.

    python -m bench.compile_time DIR rational,vaf,spline   # run twice with the same DIR

Each family: one eager population (K=8, 1 epoch, digits mlp:64,64), then compiled ones
(K=8, then K=16, then K=8 again); ``compile_s`` = first compiled minus the last (the
compile itself). ``DIR`` is passed to :func:`models.kernels.configure_compile_cache`:
an empty one gives the cold figure, a second process with the same one the on-disk
cache's figure.
"""

from __future__ import annotations

import json
import os
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
        def run(k: int, mode: str, fam: str = fam) -> float:
            os.environ["ACTSEARCH_COMPILE"] = mode
            t = time.perf_counter()
            train_population(arch, fam, [Candidate(seed=i, lr=3e-3) for i in range(k)], data, cfg)
            return time.perf_counter() - t

        eager = run(8, "off")
        first, second, again = run(8, "on"), run(16, "on"), run(8, "on")
        out[fam] = {"eager_s": eager, "first_compiled_s": first, "second_k16_s": second,
                    "again_k8_s": again, "compile_s": first - again,
                    "loadavg": os.getloadavg()[0]}
        print(fam, json.dumps({k: round(v, 2) for k, v in out[fam].items()}), flush=True)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
