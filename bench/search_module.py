"""A user's own module: fused (``torch.func`` + ``vmap``) vs one-by-one training, in one run.

    python -m bench.search_module              # digits as 1x8x8 images, a small CNN and an MLP
    python -m bench.search_module --quick      # fewer epochs
    python -m bench.search_module --k 1 4 8 16 --threads 1

What ``actsearch.search_module`` does with one population: K candidates of one
family, each the user's module built by ``build(act)``, trained on the same
batches. **fused** stacks the K modules' tensors (``stack_module_state``) and
runs one ``vmap(functional_call)`` forward/backward and one stacked optimizer
step per batch; **one by one** runs the K modules in turn, each with its own
``torch.optim`` optimizer (what a user's own loop does, and actsearch's fallback
when structures differ or the forward cannot be vmapped). Same epochs, batch,
seeds and learning rates; recording of curves and statistics off (it is the same
in both). Figure: candidate-epochs per second, the best of ``--repeats`` runs,
and the fused/one-by-one ratio; the two paths' runs alternate, so a load
spike on a shared machine hits both alike. Imports only ``models``, torch, numpy and
scikit-learn (the data).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from models.engine import TensorData
from models.spec import Candidate, TrainConfig
from models.user_training import ModuleData, train_module_population


def cnn(act: Any) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), act(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 16, 32), act(), nn.Linear(32, 10))


def mlp(act: Any) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), act(), nn.Linear(64, 64), act(),
                         nn.Linear(64, 10))


MODELS = {"cnn 1x8x8 (conv8, fc32)": (cnn, [8, 32]), "mlp 64,64": (mlp, [64, 64])}


def digits() -> TensorData:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = ((X - X.mean(0)) / (X.std(0) + 1e-6)).astype(np.float32)
    n = int(0.8 * len(X))
    return TensorData(X[:n], y[:n], X[n:], y[n:], "classification", 10)


def run(build: Any, slots: list[int], family: str, k: int, fused: bool, data: TensorData,
        epochs: int, repeats: int) -> tuple[float, str]:
    """Best candidate-epochs/s of ``repeats`` runs, and the mode the result names."""
    cands = [Candidate(seed=i, lr=float(np.geomspace(1e-3, 1e-2, max(k, 2))[i]))
             for i in range(k)]
    cfg = TrainConfig(epochs=epochs, batch_size=64, record_epochs=0)
    best, mode = 0.0, ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = train_module_population(build, family, cands, ModuleData(data, (1, 8, 8), slots),
                                      cfg, fused=fused)
        best = max(best, res.candidate_epochs / (time.perf_counter() - t0))
        mode = res.device
    return best, mode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--families", nargs="+", default=["relu", "prelu", "rational"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="1 epoch, K 4 and 8, relu and rational")
    args = ap.parse_args()
    if args.quick:
        args.epochs, args.k, args.families, args.repeats = 1, [4, 8], ["relu", "rational"], 1
    if args.threads:
        torch.set_num_threads(args.threads)
    data = digits()
    for build, slots in MODELS.values():  # warm-up: first-call costs (allocator, vmap tracing)
        run(build, slots, "relu", 2, True, data, 1, 1)
        run(build, slots, "relu", 2, False, data, 1, 1)
    print(f"digits {len(data.X_train)} train rows, batch 64, {args.epochs} epochs, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'model':<26}{'family':<10}{'K':>4}{'fused ce/s':>12}{'1-by-1 ce/s':>13}{'ratio':>8}")
    for label, (build, slots) in MODELS.items():
        for family in args.families:
            for k in args.k:
                f = o = 0.0
                fmode = ""
                for _ in range(args.repeats):  # interleaved: a load spike hits both paths alike
                    rate, fmode = run(build, slots, family, k, True, data, args.epochs, 1)
                    f = max(f, rate)
                    o = max(o, run(build, slots, family, k, False, data, args.epochs, 1)[0])
                note = "" if "fused" in fmode or k == 1 else f"  ({fmode})"
                print(f"{label:<26}{family:<10}{k:>4}{f:>12.1f}{o:>13.1f}{f / o:>8.2f}{note}",
                      flush=True)


if __name__ == "__main__":
    main()
