"""Distilled and merged networks against the learned ones they come from, in one run.

    python -m bench.distillation                       # digits, mlp:64,64, every trainable family
    python -m bench.distillation --quick               # fewer epochs, three families
    python -m bench.distillation --dataset iris --arch mlp:16,16 --threads 1

For each trainable family one network (K=1, seed 0) is trained on the built-in
dataset's seeded split, then :func:`search.analysis.distillation.analyse_network` measures,
on that split: the validation and test metric of the learned network and of its
distilled copy (every activation piecewise-linear within ``--rel-error`` of its
range) and their change; the forward speed-up of the whole network (learned /
distilled median seconds on the same batch of 1024 rows, same process); for each
near-linear layer the metric after merging it, or why it cannot be merged; and the
seconds the analysis itself took (what a finished search pays per finalist).
The last line is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import numpy as np
import torch

from models.activations import families
from models.engine import TensorData, build_network, train_population
from models.spec import ArchSpec, Candidate, TrainConfig
from search.analysis.distillation import EvalData, analyse_network
from search.datasets import load_builtin
from search.datasets.splits import split_dataset

QUICK_FAMILIES = ("prelu", "rational", "spline")


def run(dataset: str, arch_text: str, epochs: int, rel_error: float,
        names: list[str]) -> list[dict[str, Any]]:
    ds = load_builtin(dataset)
    s = split_dataset(ds, seed=0)
    n_out = int(ds.n_classes or 1)
    arch = ArchSpec.parse(arch_text)
    data = TensorData(X_train=s.X_train, y_train=s.y_train, X_val=s.X_val, y_val=s.y_val,
                      task=ds.task, n_outputs=n_out)
    rows = []
    for name in names:
        config = TrainConfig(epochs=epochs, batch_size=64, record_epochs=0)
        result = train_population(arch, name, [Candidate(seed=0, lr=3e-3)], data, config)
        cand = result.candidates[0]
        if cand.state_dict is None:
            print(f"{name}: training failed ({cand.error}); skipped")
            continue
        net = build_network(arch, name, [{}], s.X_train.shape[1], n_out)
        net.load_candidate_state(cand.state_dict)
        start = time.perf_counter()
        out = analyse_network(net, EvalData(s.X_val, s.y_val, ds.task, s.X_test, s.y_test),
                              rel_error=rel_error)
        out["analysis_s"] = time.perf_counter() - start
        out["family"] = name
        rows.append(out)
        d = out["distilled"]
        merged = [m for m in out["merge"]["layers"] if m["mergeable"]]
        print(f"{name:9s} val {d['validation_before']:.4f} -> {d['validation_after']:.4f} "
              f"({d['validation_change']:+.4f})  test {d['test_before']:.4f} -> "
              f"{d['test_after']:.4f}  knots {[x['knots'] for x in d['layers']]}  "
              f"speed-up x{d['speedup']:.2f} ({d['learned_s'] * 1e3:.2f} ms -> "
              f"{d['distilled_s'] * 1e3:.2f} ms)  mergeable layers {[m['layer'] for m in merged]}"
              f"  analysis {out['analysis_s']:.2f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--arch", default="mlp:64,64")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--rel-error", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(QUICK_FAMILIES) if args.quick else [c.name for c in families() if c.trainable]
    epochs = min(args.epochs, 5) if args.quick else args.epochs
    rows = run(args.dataset, args.arch, epochs, args.rel_error, names)
    print(json.dumps({"dataset": args.dataset, "arch": args.arch, "epochs": epochs,
                      "rel_error": args.rel_error, "threads": torch.get_num_threads(),
                      "machine": platform.processor() or platform.machine(),
                      "torch": torch.__version__, "results": rows},
                     default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o)))


if __name__ == "__main__":
    main()
