"""Transformer and resnet populations against the same K models trained one by one.

    python -m bench.archs                  # both workloads, auto K, 2 epochs
    python -m bench.archs --quick          # 1 epoch, at most 8 single runs timed
    python -m bench.engine --modern        # the same, from the engine bench

For each workload the population at the K that :func:`models.sizing.auto_population_size`
picks trains K candidates in one :func:`~models.engine.train_population` call; then the
same K candidates (same seeds, learning rates, data order) train one after the other as
K=1 calls, in the same process and run. Printed: wall time of both, candidate-epochs per
second, and the ratio (one-by-one time / population time). With ``--singles N`` only N of
the K single runs are timed and the loop's time is extrapolated (said so in the output).
The machine's load average is printed at the start and the end (it is shared).

Workloads: ``transformer:d=64,layers=2,heads=4`` and ``transformer:d=16,layers=2,heads=2``
(``transformer_small``) on ``modular_sum``-shaped tokens ("a b" -> (a + b) mod 97, 4,096
sampled pairs) and ``resnet:16,32`` on scikit-learn's digits as 1x8x8 images; batch 128,
Adam, cosine schedule, validation every epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from models.engine import TensorData, train_population
from models.sizing import auto_population_size, cpu_cores, tune_cpu
from models.spec import ArchSpec, Candidate, TrainConfig

BATCH = 128


def modular_tokens(p: int = 97, n: int = 4096, seed: int = 0) -> tuple[TensorData, int]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, p, size=(n, 2))
    y = x.sum(1) % p
    cut = n * 3 // 4
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).long()
    return TensorData(xt[:cut], yt[:cut], xt[cut:], yt[cut:], "classification", p), p


def digit_images() -> TensorData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.data / 16.0).float()
    x = (x - x.mean()) / x.std()  # one channel: per-channel standardisation
    y = torch.from_numpy(d.target).long()
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    cut = len(x) * 3 // 4
    tr, va = perm[:cut], perm[cut:]
    return TensorData(x[tr], y[tr], x[va], y[va], "classification", 10)


def candidates(k: int) -> list[Candidate]:
    rng = np.random.default_rng(0)
    lrs = np.exp(rng.uniform(np.log(1e-3), np.log(1e-2), size=k))
    return [Candidate(seed=i, lr=float(lr), weight_decay=1e-4) for i, lr in enumerate(lrs)]


def run(arch: ArchSpec, family: str, data: TensorData, epochs: int, singles: int | None,
        k: int | None) -> dict[str, Any]:
    n_in = data.X_train.shape[1]
    auto_k = auto_population_size(arch, family, {}, n_in, data.n_outputs, BATCH)
    k = k or auto_k
    config = TrainConfig(epochs=epochs, batch_size=BATCH, record_epochs=0)
    cands = candidates(k)
    train_population(arch, family, cands[:1], data,
                     TrainConfig(epochs=1, batch_size=BATCH, record_epochs=0))  # warm-up
    t0 = time.perf_counter()
    fused = train_population(arch, family, cands, data, config)
    t_fused = time.perf_counter() - t0
    n_single = k if singles is None else max(1, min(k, singles))
    t0 = time.perf_counter()
    single_metrics = []
    for c in cands[:n_single]:
        res = train_population(arch, family, [c], data, config)
        single_metrics.append(res.candidates[0].val_metric)
    t_single = (time.perf_counter() - t0) * k / n_single
    fused_metrics = [c.val_metric for c in fused.candidates[:n_single]]
    return {
        "arch": arch.short(), "family": family, "k": k, "auto_k": auto_k, "epochs": epochs,
        "n_params": fused.n_params, "flops": fused.flops,
        "population_s": t_fused, "one_by_one_s": t_single,
        "singles_timed": n_single, "extrapolated": n_single < k,
        "population_cand_epochs_per_s": k * epochs / t_fused,
        "one_by_one_cand_epochs_per_s": k * epochs / t_single,
        "ratio": t_single / t_fused,
        "max_metric_gap": float(np.max(np.abs(np.subtract(fused_metrics, single_metrics)))),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="1 epoch, at most 8 single runs timed")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--singles", type=int, default=None,
                   help="time only this many of the K single runs (extrapolated)")
    p.add_argument("--k", type=int, default=None, help="K instead of auto")
    p.add_argument("--families", default="relu,swiglu")
    p.add_argument("--workloads", default="transformer,transformer_small,resnet")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    settings = tune_cpu(args.threads if args.threads is not None else cpu_cores())
    load_start = [round(v, 2) for v in os.getloadavg()]
    epochs = args.epochs or (1 if args.quick else 2)
    singles = args.singles if args.singles is not None else (8 if args.quick else None)
    tokens, vocab = modular_tokens()
    workloads = {
        "transformer": (ArchSpec.parse("transformer:d=64,layers=2,heads=4", vocab_size=vocab),
                        tokens),
        "transformer_small": (ArchSpec.parse("transformer:d=16,layers=2,heads=2",
                                             vocab_size=vocab), tokens),
        "resnet": (ArchSpec.parse("resnet:16,32", input_shape=(1, 8, 8)), None),
    }
    results = []
    for name in [w.strip() for w in args.workloads.split(",") if w.strip()]:
        arch, data = workloads[name]
        data = data if data is not None else digit_images()
        for family in [f.strip() for f in args.families.split(",") if f.strip()]:
            r = run(arch, family, data, epochs, singles, args.k)
            results.append(r)
            note = f" (one-by-one extrapolated from {r['singles_timed']})" if r["extrapolated"] else ""
            print(f"[bench.archs] {r['arch']} {family}: K={r['k']} (auto {r['auto_k']}) population "
                  f"{r['population_s']:.1f} s, one by one {r['one_by_one_s']:.1f} s{note}: "
                  f"x{r['ratio']:.2f}", flush=True)
    out = {"bench": "archs", "threads": settings["threads"], "torch": torch.__version__,
           "loadavg_start": load_start, "loadavg_end": [round(v, 2) for v in os.getloadavg()],
           "results": results}
    print(f"load average: start {load_start}, end {out['loadavg_end']}")
    print(json.dumps(out, default=float))
    return out


if __name__ == "__main__":
    main()
