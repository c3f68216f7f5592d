"""The population engine against the training loop users write today, in one run.

    python -m bench.engine                 # CPU: digits, mlp:64,64 and mlp:256,256
    python -m bench.engine --quick         # a smaller, faster run
    python -m bench.engine --device cuda   # GPU: 60,000-row MNIST-shaped set, mlp:256,256
    python -m bench.engine --mixed [...]   # the mixed-family workload (bench/mixed.py)

Measured on the same machine in the same run:

* **baseline**: the loop after Optuna's PyTorch example: a ``DataLoader`` over a CPU
  ``TensorDataset`` (batch 128, shuffled), ``.to(device)`` per batch, a plain
  ``nn.Sequential`` MLP (with a user-written ``nn.Module`` for rational/VAF), Adam,
  validation after every epoch, one trial at a time;
* **actsearch**: :func:`models.engine.train_population` with K = 1 (a plain trial) and
  K candidates at once, the same epochs, batch size, optimizer and validation;
* **peak**: a plain ``torch.matmul`` (1024x1024 fp32 on CPU, 4096x4096 in the training
  dtype on GPU), best of several runs.

Figures: candidate-epochs per second; time until the baseline's best validation
accuracy is reached (the baseline's trials run one after the other; a population
reaches it when any candidate does; time from the call's start, setup included);
achieved FLOP/s = ``count_flops`` (one row's forward, activation FLOPs included) x
training rows x 3 (forward + backward) x candidate-epochs / wall time (evaluation
forwards are done but not counted), and its share of the measured matmul peak.

Trial hyperparameters are shared: candidate i of every population and baseline trial i
use seed i and the i-th learning rate of one log-uniform draw in [1e-3, 1e-2].
Timings are the best of ``--repeats`` runs of each path. Compiling the trainable
kernels (``models.kernels``) happens in a warm-up run; its seconds are reported
(``compile_s``) but not in the steady-state figures.

The GPU part imports only ``models`` and torch (``--device cuda`` never imports
scikit-learn); it ran on a lent H100 (bench/README.md has the table).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from models import kernels
from models.activations import BASE_FUNCTIONS, get_activation
from models.activations.rational import fit_rational
from models.engine import EpochReport, TensorData, count_flops, train_population
from models.sizing import auto_population_size, cpu_cores, tune_cpu
from models.spec import ArchSpec, Candidate, TrainConfig

BATCH = 128
LR_RANGE = (1e-3, 1e-2)


# ----- data -------------------------------------------------------------------------------
@dataclass
class Split:
    name: str
    x_tr: torch.Tensor
    y_tr: torch.Tensor
    x_va: torch.Tensor
    y_va: torch.Tensor
    n_classes: int

    def tensor_data(self) -> TensorData:
        return TensorData(self.x_tr, self.y_tr, self.x_va, self.y_va, "classification", self.n_classes)


def _standardise(x_tr: torch.Tensor, x_va: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = x_tr.mean(0), x_tr.std(0).clamp_min(1e-6)
    return ((x_tr - mean) / std).contiguous(), ((x_va - mean) / std).contiguous()


def digits() -> Split:
    """scikit-learn's 8x8 digits: 1,437 training and 360 validation rows (seeded split)."""
    from sklearn.datasets import load_digits  # CPU part only

    x_np, y_np = load_digits(return_X_y=True)
    x, y = torch.as_tensor(x_np, dtype=torch.float32), torch.as_tensor(y_np, dtype=torch.long)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    tr, va = perm[:1437], perm[1437:]
    x_tr, x_va = _standardise(x[tr], x[va])
    return Split("digits", x_tr, y[tr].contiguous(), x_va, y[va].contiguous(), 10)


def mnist_shaped(n_train: int = 60_000, n_val: int = 10_000, seed: int = 0) -> Split:
    """A generated MNIST-shaped set (784 features in [0, 1], 10 classes), torch only.

    Each class has a smooth 28x28 prototype (7x7 noise upsampled); a row is its class's
    prototype, shifted by up to 2 pixels, scaled, plus smooth noise: learnable, not trivial.
    """
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_val

    def smooth(count: int) -> torch.Tensor:
        low = torch.rand(count, 1, 7, 7, generator=g)
        return F.interpolate(low, size=(28, 28), mode="bilinear", align_corners=False)[:, 0]

    protos = smooth(10)  # (10, 28, 28)
    y = torch.randint(0, 10, (n,), generator=g)
    shifts = torch.randint(-2, 3, (n, 2), generator=g)
    x = torch.empty(n, 28, 28)
    for c in range(10):
        for dx in range(-2, 3):
            for dy in range(-2, 3):
                rows = ((y == c) & (shifts[:, 0] == dx) & (shifts[:, 1] == dy)).nonzero()[:, 0]
                if rows.numel():
                    x[rows] = torch.roll(protos[c], shifts=(dx, dy), dims=(0, 1))
    scale = 0.5 + torch.rand(n, 1, 1, generator=g)
    noise = torch.cat([smooth(5000) for _ in range(math.ceil(n / 5000))])[:n]
    x = (x * scale + 1.2 * (noise - 0.5)).clamp(0, 1).reshape(n, 784)
    x_tr, x_va = _standardise(x[:n_train], x[n_train:])
    return Split("mnist_shaped", x_tr, y[:n_train].contiguous(), x_va, y[n_train:].contiguous(), 10)


# ----- the baseline: what a user writes today --------------------------------------------
class UserRational(nn.Module):
    """A user's Padé activation (PAU, degree 5/4, one set per layer), Horner in Python."""

    def __init__(self, m: int = 5, base: str = "leaky_relu"):
        super().__init__()
        num, den = fit_rational(base, m, m - 1)
        self.a = nn.Parameter(torch.tensor(num))
        self.b = nn.Parameter(torch.tensor(den))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        num = self.a[-1] * x + self.a[-2]
        for j in range(len(self.a) - 3, -1, -1):
            num = num * x + self.a[j]
        den = self.b[-1] * x + self.b[-2] if len(self.b) > 1 else self.b[-1].expand_as(x)
        for j in range(len(self.b) - 3, -1, -1):
            den = den * x + self.b[j]
        return num / (1 + (den * x).abs())


class UserVAF(nn.Module):
    """A user's meta-neuron: ``Linear(1, W) -> f -> Linear(W, 1)`` applied to every unit."""

    def __init__(self, width: int = 4, inner: str = "relu"):
        super().__init__()
        self.f = BASE_FUNCTIONS[inner].fn
        self.inp = nn.Linear(1, width)
        self.out = nn.Linear(width, 1)
        with torch.no_grad():  # start at f(z), as actsearch's VAF does
            self.inp.weight[0] = 1.0
            self.inp.bias[0] = 0.0
            self.out.weight.zero_()
            self.out.weight[0, 0] = 1.0
            self.out.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.f(self.inp(x.unsqueeze(-1)))).squeeze(-1)


USER_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "rational": UserRational,
    "vaf": UserVAF,
}


def user_model(n_in: int, hidden: Sequence[int], n_out: int, family: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), USER_ACTIVATIONS[family]()]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def baseline_trial(split: Split, hidden: Sequence[int], family: str, lr: float, seed: int,
                   epochs: int, device: torch.device) -> dict[str, Any]:
    """One trial of the Optuna-example loop; per-epoch (seconds since start, val accuracy)."""
    torch.manual_seed(seed)
    model = user_model(split.x_tr.shape[1], hidden, split.n_classes, family).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    train_loader = DataLoader(TensorDataset(split.x_tr, split.y_tr), batch_size=BATCH, shuffle=True)
    valid_loader = DataLoader(TensorDataset(split.x_va, split.y_va), batch_size=BATCH)
    curve = []
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for data, target in train_loader:
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            output = F.log_softmax(model(data), dim=1)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for data, target in valid_loader:
                data, target = data.to(device), target.to(device)
                correct += int((model(data).argmax(dim=1) == target).sum().item())
        curve.append((time.perf_counter() - t0, correct / len(valid_loader.dataset)))
    return {"wall_s": time.perf_counter() - t0, "curve": curve}


# ----- actsearch ----------------------------------------------------------------------------
def learning_rates(k: int) -> list[float]:
    g = torch.Generator().manual_seed(0)
    lo, hi = math.log(LR_RANGE[0]), math.log(LR_RANGE[1])
    return [math.exp(lo + (hi - lo) * float(u)) for u in torch.rand(k, generator=g)]


def make_candidates(k: int) -> list[Candidate]:
    return [Candidate(seed=i, lr=lr) for i, lr in enumerate(learning_rates(k))]


@contextmanager
def compile_env(value: str | None) -> Any:
    old = os.environ.get("ACTSEARCH_COMPILE")
    if value is not None:
        os.environ["ACTSEARCH_COMPILE"] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ACTSEARCH_COMPILE", None)
        else:
            os.environ["ACTSEARCH_COMPILE"] = old


def fused_family(family: str) -> bool:
    return bool(getattr(get_activation(family), "fused", False)) and kernels.compile_setting() != "off"


def engine_run(split: Split, arch: ArchSpec, family: str, k: int, epochs: int, batch: int,
               device: torch.device, repeats: int) -> dict[str, Any]:
    data = split.tensor_data()
    cands = make_candidates(k)
    cfg = TrainConfig(epochs=epochs, batch_size=batch, optimizer="adam", schedule="constant",
                      record_epochs=0, device=str(device))
    # Warm-up: one epoch, same K. For a fused family it compiles the kernels (the first
    # population of a family in a process pays this; its seconds are reported), after
    # which the engine's own policy (``auto``) runs them compiled, as in a search.
    with compile_env("on" if fused_family(family) else None):
        t0 = time.perf_counter()
        train_population(arch, family, cands, data,
                         TrainConfig(**{**cfg.to_dict(), "epochs": 1}))
        warm_s = time.perf_counter() - t0
    compiled = fused_family(family) and kernels.should_compile(device, 0.0, [family])
    best: dict[str, Any] | None = None
    for _ in range(repeats):
        curve: list[tuple[float, float]] = []

        def on_epoch(report: EpochReport, curve: list[tuple[float, float]] = curve) -> None:
            curve.append((report.elapsed_s, max(report.val_metric)))

        res = train_population(arch, family, cands, data, cfg, on_epoch=on_epoch)
        if best is None or res.wall_s < best["wall_s"]:
            best = {"wall_s": res.wall_s, "candidate_epochs": res.candidate_epochs,
                    "curve": curve, "flops_per_row": res.flops}
    assert best is not None
    best.update(k=k, batch=batch, compiled=compiled, warmup_s=warm_s)
    return best


# ----- peak ---------------------------------------------------------------------------------
def matmul_peak(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    reps = 20 if device.type == "cuda" else 5
    best = float("inf")
    for _ in range(3):
        torch.matmul(a, b, out=out)
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b, out=out)
        _sync(device)
        best = min(best, (time.perf_counter() - t0) / reps)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "flops_per_s": 2 * n**3 / best}


# ----- one workload -------------------------------------------------------------------------
@dataclass
class Workload:
    split: Split
    arch_text: str
    family: str
    ks: list[int]
    epochs: int
    n_base: int
    extra_batches: list[int] = field(default_factory=list)


def time_to(curve: Sequence[tuple[float, float]], target: float, offset: float = 0.0) -> float | None:
    for elapsed, acc in curve:
        if acc >= target - 1e-9:
            return offset + elapsed
    return None


def run_workload(w: Workload, device: torch.device, repeats: int, peak: float,
                 threads: int) -> dict[str, Any]:
    arch = ArchSpec.parse(w.arch_text)
    n_train = w.split.x_tr.shape[0]
    flops_row = count_flops(arch, w.family, {}, w.split.x_tr.shape[1], w.split.n_classes)
    lrs = learning_rates(w.n_base)
    # baseline: n_base trials one after another; each timed as the best of `repeats`
    trials = []
    for i in range(w.n_base):
        runs = [baseline_trial(w.split, arch.hidden, w.family, lrs[i], i, w.epochs, device)
                for _ in range(repeats)]
        trials.append(min(runs, key=lambda r: r["wall_s"]))
    base_wall = sum(t["wall_s"] for t in trials)
    base_ce = w.n_base * w.epochs
    target = max(acc for t in trials for _, acc in t["curve"])
    offset, base_ttt = 0.0, None
    for t in trials:
        hit = time_to(t["curve"], target, offset)
        if hit is not None:
            base_ttt = hit
            break
        offset += t["wall_s"]
    baseline = {
        "trials": w.n_base, "epochs": w.epochs, "wall_s": base_wall,
        "cand_epochs_per_s": base_ce / base_wall,
        "best_val_acc": target, "time_to_best_s": base_ttt,
        "flops_per_s": flops_row * n_train * 3 * base_ce / base_wall,
    }
    baseline["peak_fraction"] = baseline["flops_per_s"] / peak
    auto_k = auto_population_size(arch, w.family, {}, w.split.x_tr.shape[1], w.split.n_classes,
                                  BATCH, device, threads=threads)
    runs = []
    plan = [(k, BATCH) for k in w.ks]
    if auto_k not in w.ks:
        plan.append((auto_k, BATCH))
    plan += [(max(w.ks), b) for b in w.extra_batches]
    for k, batch in plan:
        r = engine_run(w.split, arch, w.family, k, w.epochs, batch, device, repeats)
        rate = r["candidate_epochs"] / r["wall_s"]
        fl = r["flops_per_row"] * n_train * 3 * r["candidate_epochs"] / r["wall_s"]
        ttt = time_to(r["curve"], target)
        runs.append({
            "k": k, "batch": batch, "auto": k == auto_k and batch == BATCH,
            "wall_s": r["wall_s"], "candidate_epochs": r["candidate_epochs"],
            "cand_epochs_per_s": rate, "speedup": rate / baseline["cand_epochs_per_s"],
            "time_to_best_s": ttt,
            "time_to_best_speedup": (base_ttt / ttt) if (ttt and base_ttt) else None,
            "best_val_acc": max(acc for _, acc in r["curve"]),
            "flops_per_s": fl, "peak_fraction": fl / peak,
            "compiled": r["compiled"], "warmup_s": r["warmup_s"],
        })
    return {"dataset": w.split.name, "arch": w.arch_text, "family": w.family,
            "flops_per_row": flops_row, "train_rows": n_train, "auto_k": auto_k,
            "baseline": baseline, "runs": runs}


# ----- report -------------------------------------------------------------------------------
def _fmt(v: float | None, spec: str = ".1f", none: str = "-") -> str:
    return none if v is None else format(v, spec)


def print_table(result: dict[str, Any]) -> None:
    head = (f"{'workload':<28} {'path':<22} {'cand-ep/s':>10} {'x base':>8} {'t->best s':>10} "
            f"{'x base':>7} {'GFLOP/s':>8} {'%peak':>6} {'best acc':>8}")
    print(head)
    print("-" * len(head))
    for w in result["workloads"]:
        name = f"{w['dataset']} {w['arch']} {w['family']}"
        b = w["baseline"]
        print(f"{name:<28} {'baseline (DataLoader)':<22} {b['cand_epochs_per_s']:>10.1f} {1.0:>8.2f} "
              f"{_fmt(b['time_to_best_s'], '.2f'):>10} {1.0:>7.2f} {b['flops_per_s'] / 1e9:>8.2f} "
              f"{100 * b['peak_fraction']:>6.1f} {b['best_val_acc']:>8.3f}")
        for r in w["runs"]:
            path = f"actsearch K={r['k']}"
            if r["batch"] != BATCH:
                path += f" bs={r['batch']}"
            if r["auto"]:
                path += " (auto)"
            if r["compiled"]:
                path += " c"
            print(f"{'':<28} {path:<22} {r['cand_epochs_per_s']:>10.1f} {r['speedup']:>8.2f} "
                  f"{_fmt(r['time_to_best_s'], '.2f'):>10} {_fmt(r['time_to_best_speedup'], '.2f'):>7} "
                  f"{r['flops_per_s'] / 1e9:>8.2f} {100 * r['peak_fraction']:>6.1f} "
                  f"{r['best_val_acc']:>8.3f}")
    print()
    peak = result["peak"]
    print(f"peak: torch.matmul {peak['n']}x{peak['n']} {peak['dtype']}: "
          f"{peak['flops_per_s'] / 1e9:.1f} GFLOP/s; threads {result['threads']}; "
          f"load average {result['loadavg_start']} -> {result['loadavg_end']}")
    for key, value in result["cost_ratio"].items():
        print(f"cost per candidate-epoch, {key}: {value['ratio']:.2f}x (K={value['k']}, {value['arch']})")
    print("c = trainable kernels compiled (compile seconds in the JSON as warmup_s); "
          "bs = a batch size other than the spec's 128, for reference only")


def cost_ratios(workloads: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds per candidate-epoch of each trainable family / relu, same arch, largest K."""
    out: dict[str, Any] = {}
    by_key = {(w["dataset"], w["arch"], w["family"]): w for w in workloads}
    for (ds, arch, fam), w in by_key.items():
        ref = by_key.get((ds, arch, "relu"))
        if fam == "relu" or ref is None:
            continue
        k = max(r["k"] for r in w["runs"] if r["batch"] == BATCH)
        mine = next(r for r in w["runs"] if r["k"] == k and r["batch"] == BATCH)
        theirs = next((r for r in ref["runs"] if r["k"] == k and r["batch"] == BATCH), None)
        if theirs is None:
            continue
        out[f"{fam}/relu {ds} {arch}"] = {
            "ratio": theirs["cand_epochs_per_s"] / mine["cand_epochs_per_s"], "k": k, "arch": arch}
    return out


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {cpu_cores()} cores"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if "--mixed" in args_list:  # mixed 8-family population vs relu vs 8 x K=4, same run
        from . import mixed

        return mixed.main([a for a in args_list if a != "--mixed"])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--quick", action="store_true", help="fewer epochs, K values and workloads")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--ks", default=None, help="comma-separated K values")
    p.add_argument("--families", default="relu,rational,vaf")
    p.add_argument("--archs", default=None, help="e.g. 'mlp:64,64;mlp:256,256'")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the cores)")
    p.add_argument("--repeats", type=int, default=None, help="best of N timings per path")
    p.add_argument("--trials", type=int, default=None, help="baseline trials per workload")
    p.add_argument("--extra-batches", default=None,
                   help="also run the largest K at these batch sizes (reference only)")
    p.add_argument("--modern", action="store_true",
                   help="the transformer and resnet workloads instead (bench/archs.py)")
    args, rest = p.parse_known_args(argv)
    if args.modern:  # population at auto K vs the same K models one by one
        from bench import archs

        return archs.main([*rest, *(["--quick"] if args.quick else [])])
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda asked for, but CUDA is not available here")
    settings = tune_cpu(args.threads if args.threads is not None else cpu_cores())
    load_start = [round(v, 2) for v in os.getloadavg()]
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    if device.type == "cuda":
        split = mnist_shaped()
        archs = (args.archs or "mlp:256,256").split(";")
        ks = [1, 8, 32] if args.quick else [1, 8, 32, 128]
        epochs = args.epochs or (1 if args.quick else 3)
        n_base = args.trials or (1 if args.quick else 2)
        extra = []
        amp = os.environ.get("ACTSEARCH_AMP", "").lower() == "bf16"
        torch.backends.cuda.matmul.allow_tf32 = os.environ.get("ACTSEARCH_TF32", "1") != "0"
        peak = matmul_peak(device, torch.bfloat16 if amp else torch.float32)
        if not amp and torch.backends.cuda.matmul.allow_tf32:
            peak["dtype"] = "float32 (tf32 math)"
    else:
        split = digits()
        archs = (args.archs or ("mlp:64,64" if args.quick else "mlp:64,64;mlp:256,256")).split(";")
        ks = [1, 8, 32] if args.quick else [1, 8, 16, 32, 64]
        epochs = args.epochs or (5 if args.quick else 20)
        n_base = args.trials or (2 if args.quick else 3)
        extra = [] if args.quick else [512]
        peak = matmul_peak(device, torch.float32)
    if args.ks:
        ks = [int(v) for v in args.ks.split(",")]
    if args.extra_batches is not None:
        extra = [int(v) for v in args.extra_batches.split(",") if v.strip()]
    repeats = args.repeats or (1 if args.quick else 2)

    workloads = []
    for arch_text in archs:
        for fam in families:
            w = Workload(split, arch_text.strip(), fam, ks, epochs, n_base,
                         extra if fam == "relu" else [])
            workloads.append(run_workload(w, device, repeats, peak["flops_per_s"],
                                          int(settings["threads"])))
            done = workloads[-1]
            print(f"[bench] {split.name} {arch_text} {fam}: baseline "
                  f"{done['baseline']['cand_epochs_per_s']:.1f} cand-ep/s; "
                  + ", ".join(f"K={r['k']}{'' if r['batch'] == BATCH else ' bs=' + str(r['batch'])} "
                              f"{r['cand_epochs_per_s']:.1f}" for r in done["runs"]),
                  file=sys.stderr, flush=True)
    result = {
        "bench": "engine", "device": str(device), "machine": machine(device),
        "torch": torch.__version__, "threads": settings["threads"],
        "malloc_tuned": settings["malloc_tuned"], "epochs": epochs, "batch": BATCH,
        "repeats": repeats, "loadavg_start": load_start,
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "peak": peak, "workloads": workloads, "cost_ratio": cost_ratios(workloads),
    }
    print_table(result)
    print(json.dumps(result, default=float))
    return result


if __name__ == "__main__":
    main()
