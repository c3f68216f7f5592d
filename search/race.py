"""Racing the families: successive halving with families as arms (``allocation: race``).

The search's compute is ``trials x epochs`` candidate-epochs, what the equal protocol
would spend. A race spends it in rungs of rising fidelity:

* a warm-up (:func:`warmup`) first: the baseline alone trains a few points of one
  low-discrepancy sequence over lr and weight decay (:func:`shared_hparams`) at rung 0's
  epochs, a twentieth of the compute at most. At few epochs the right learning rate is
  far from the middle of its range, and one shared lr decides a whole screening rung (on
  the periodic teacher the log-centre's 1.7e-3 left every family below 0.44 accuracy at
  rung 0; the warm-up's 1.5e-2 raised the rung's best to 0.60), so the screening rung
  trains on the points the warm-up ranked best;
* rung 0: every family gets the same few trials at few epochs, on the *same*
  hyperparameters (trial j of every family trains with the warm-up's j-th best point),
  so the first, noisiest comparison is paired: families differ there in their activation
  only;
* after each rung the best ``1/eta`` of the families (ranked by their lowest validation
  loss *in that rung*, where every family had the same trials and epochs:
  :func:`rung_ranking`) go on to the next rung, which trains more trials per family at
  more epochs;
* the last rung trains at the search's full ``epochs``; its families are the finalists.

ReLU, the baseline, is never stopped: it runs in every rung with the same trials and
epochs as every other family there, so it always receives at least the budget of the
best-funded family and "delta vs ReLU" compares equally tuned candidates. A stopped
family is listed as stopped at its rung with the budget it received, never ranked as if
it had been tuned as much as the winners.

Each rung's budget is an equal share of what is left (Hyperband's rule), capped so an
early rung never asks many more trials per family than an equal split of the search's
trials would give; what a capped rung leaves goes to the later rungs. With at most
``eta + 1`` families there is nothing to race: one rung at full epochs, the equal
protocol.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DEFAULT_ETA = 3
#: The warm-up's index among the rungs (it runs before rung 0, the baseline alone).
WARMUP_RUNG = -1
#: How many shared (lr, weight decay) points the warm-up trains, and the share of the
#: search's compute it may take; with fewer than WARMUP_MIN points affordable there is
#: no warm-up and rung 0 trains the sequence's first points as they come.
WARMUP_POINTS, WARMUP_SHARE, WARMUP_MIN = 8, 0.05, 3


@dataclass(frozen=True)
class Rung:
    """One rung of the race: how many families run in it, at how many epochs, how many trials each."""

    index: int
    families: int
    epochs: int
    trials_per_family: int

    @property
    def trials(self) -> int:
        return self.families * self.trials_per_family

    @property
    def candidate_epochs(self) -> int:
        return self.trials * self.epochs


def kept(families: int, eta: int) -> int:
    """How many of ``families`` the next rung keeps: the best ``1/eta``, plus the baseline."""
    return min(families, math.ceil((families - 1) / eta) + 1)


def _rung_shapes(n_families: int, epochs: int, eta: int) -> tuple[list[int], list[int]]:
    """Families and epochs of each rung."""
    counts = [n_families]
    while counts[-1] > eta + 1:
        counts.append(kept(counts[-1], eta))
    n_rungs = len(counts)
    # Epochs grow by sqrt(eta) per rung (families shrink by eta): at a third of the epochs
    # a trainable unit has barely left its initial shape, so the first rung must not be
    # too short to tell families apart.
    return counts, [max(1, round(epochs / eta ** ((n_rungs - 1 - r) / 2)))
                    for r in range(n_rungs)]


def warmup(n_families: int, trials: int, epochs: int, eta: int = DEFAULT_ETA) -> Rung | None:
    """The race's warm-up: the baseline alone, ``WARMUP_POINTS`` shared points at rung 0's
    epochs (fewer where they would take more than ``WARMUP_SHARE`` of the compute); None
    where there is no race or not even ``WARMUP_MIN`` points are affordable."""
    if n_families <= eta + 1:
        return None
    e0 = _rung_shapes(n_families, epochs, eta)[1][0]
    points = min(WARMUP_POINTS, math.floor(WARMUP_SHARE * trials * epochs / e0))
    return Rung(WARMUP_RUNG, 1, e0, points) if points >= WARMUP_MIN else None


def schedule(n_families: int, trials: int, epochs: int, eta: int = DEFAULT_ETA) -> list[Rung]:
    """The rungs of a race over ``n_families`` (baseline included) with ``trials x epochs`` compute.

    ``trials`` and ``epochs`` are the search's: the equal protocol would train
    ``trials`` candidates at ``epochs`` each. The warm-up (:func:`warmup`) is not among
    the rungs; its compute is taken from theirs.
    """
    counts, rung_epochs = _rung_shapes(n_families, epochs, eta)
    n_rungs = len(counts)
    first = warmup(n_families, trials, epochs, eta)
    left = trials * epochs - (first.candidate_epochs if first else 0)
    rungs = []
    for r, (m, e) in enumerate(zip(counts, rung_epochs, strict=True)):
        share = left / (n_rungs - r)
        cap = max(2, math.ceil(trials / m))  # an early rung screens; it does not tune
        n = max(1, min(cap, math.floor(share / (m * e)))) if r < n_rungs - 1 else max(
            1, math.floor(left / (m * e)))
        rungs.append(Rung(r, m, e, n))
        left -= m * e * n
    return rungs


def races(spec_families: Sequence[str], allocation: str, eta: int = DEFAULT_ETA) -> bool:
    """Whether a search with these families and allocation runs a race (more than one rung)."""
    return allocation == "race" and len(spec_families) > eta + 1


def promote(ranked: dict[str, float], families: Sequence[str], keep: int) -> list[str]:
    """The families that go on: the ``keep`` best by their rung value, the baseline always.

    ``ranked``: each family's score in the rung just finished (:func:`rung_ranking`; a
    family with no completed trial there has none, and ranks last). Ties keep the search's
    family order. The baseline takes one of the ``keep`` places (it would anyway when it
    is among the best; otherwise it displaces the last of them), so the rung's size is
    what the schedule planned.
    """
    from .protocol import BASELINE  # (scipy: only once a rung is decided)

    order = sorted(families, key=lambda f: (-ranked.get(f, -math.inf), families.index(f)))
    chosen = order[:keep]
    if BASELINE in families and BASELINE not in chosen:
        chosen = [*chosen[: keep - 1], BASELINE]
    return [f for f in families if f in chosen]  # in the search's order


def rung_ranking(trials: Iterable[tuple[str, str, float | None, float | None]]
                 ) -> dict[str, float]:
    """Each family's score in one rung (higher is better) from its trials' ``(family,
    state, value, lowest validation loss)``: minus the lowest loss of its completed
    trials, or, where some completed trial has no loss, the best value (:func:`best_in_rung`).

    The loss, not the metric, because a screening rung is short: at 4 epochs on 450
    validation rows a classifier's accuracy moves in steps of 1/450 and its sampling
    noise (about 0.024 at 0.5) is as large as the gaps between families, while its
    cross-entropy moves smoothly with what it has learnt. On the periodic teacher the
    accuracy ranking stopped spline at rung 0 and the loss ranking kept it, and spline
    won. For regression the loss orders trials as R² does.
    """
    rows = list(trials)
    done = [r for r in rows if r[1] == "complete" and r[2] is not None]
    if done and all(r[3] is not None and math.isfinite(r[3]) for r in done):
        return best_in_rung((f, state, -loss if loss is not None else None)
                            for f, state, _value, loss in rows)
    return best_in_rung((f, state, value) for f, state, value, _loss in rows)


def best_in_rung(trials: Iterable[tuple[str, str, float | None]]) -> dict[str, float]:
    """Best completed value per family from ``(family, state, value)`` of one rung's trials."""
    best: dict[str, float] = {}
    for family, state, value in trials:
        if state != "complete" or value is None or not math.isfinite(value):
            continue
        best[family] = max(best.get(family, -math.inf), value)
    return best


def planned_trials(n_families: int, trials: int, epochs: int, allocation: str,
                   eta: int = DEFAULT_ETA) -> int:
    """The search phase's trial count: the progress bar's total."""
    if allocation == "race" and n_families > eta + 1:
        first = warmup(n_families, trials, epochs, eta)
        return sum(r.trials for r in schedule(n_families, trials, epochs, eta)) + (
            first.trials if first else 0)
    return max(1, -(-trials // n_families)) * n_families


def describe_budget(n_families: int, trials: int, epochs: int, allocation: str,
                    eta: int = DEFAULT_ETA) -> str:
    """One line for the CLI: how the search spends its compute."""
    if not (allocation == "race" and n_families > eta + 1):
        per = max(1, -(-trials // n_families))
        return f"{n_families} families x {per} trials, {epochs} epochs"
    rungs = schedule(n_families, trials, epochs, eta)
    steps = " -> ".join(f"{r.families} x {r.trials_per_family} @ {r.epochs} ep" for r in rungs)
    first = warmup(n_families, trials, epochs, eta)
    warm = (f" after a warm-up of {first.trials} relu trials @ {first.epochs} ep that picks "
            "rung 0's lr and weight decay" if first else "")
    return (f"{n_families} families raced in {len(rungs)} rungs ({steps}; families x trials "
            f"@ epochs){warm}, the compute of {trials} trials x {epochs} epochs")


def _halton(index: int, base: int) -> float:
    f, r = 1.0, 0.0
    while index > 0:
        f /= base
        r += f * (index % base)
        index //= base
    return r


def shared_hparams(j: int, lr: tuple[float, float], weight_decay: tuple[float, float]
                   ) -> dict[str, float]:
    """The j-th shared (lr, weight decay) point of the warm-up: the log-centre of both
    ranges first, then a Halton sequence (bases 2 and 3) over their logs, so any prefix of
    the sequence covers the box evenly."""
    u, v = (0.5, 0.5) if j == 0 else (_halton(j + 1, 2), _halton(j + 1, 3))

    def between(bounds: tuple[float, float], t: float) -> float:
        lo, hi = math.log(bounds[0]), math.log(bounds[1])
        return float(math.exp(lo + t * (hi - lo)))

    return {"lr": between(lr, u), "weight_decay": between(weight_decay, v)}


def ranked_points(trials: Iterable[tuple[str, float | None, dict[str, float]]]
                  ) -> list[dict[str, float]]:
    """The warm-up's (lr, weight decay) points, best first, from its ``(state, value,
    hparams)``: completed trials by value, then pruned ones by their last value; failed
    ones are left out (they say nothing about the point)."""
    scored = []
    for order, (state, value, hparams) in enumerate(trials):
        if state == "fail" or value is None or not math.isfinite(value):
            continue
        scored.append((state != "complete", -value, order, hparams))
    return [{"lr": float(h["lr"]), "weight_decay": float(h["weight_decay"])}
            for *_, h in sorted(scored, key=lambda s: s[:3])]


def first_rung_point(j: int, ranked: Sequence[dict[str, float]], lr: tuple[float, float],
                     weight_decay: tuple[float, float]) -> dict[str, float]:
    """What trial j of every family trains at rung 0: the warm-up's j-th best point, then
    the sequence's points the warm-up did not train."""
    if j < len(ranked):
        return dict(ranked[j])
    return shared_hparams(j, lr, weight_decay)
