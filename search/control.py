"""The equal-compute control arm (``control: relu``): its phases, its row and the verdict.

A search asked with ``control: "relu"`` also runs a ReLU-only search with the same
total compute, once its own leaderboard is decided, and compares the final choice's
test metric with that control's: "did searching activations beat spending the same
compute on tuning ReLU alone?". Compute is counted in candidate-epochs actually
trained (one epoch row per candidate and epoch), search phase plus finalists, on both
sides. The state-machine step that plans and scores it is
:mod:`search.coordinator.control`; this module holds what the protocol needs:

* the phase names: ``control`` (ReLU-only tuning trials, asked from the control's own
  Optuna study ``<study_name>-control`` so the main study's trials and parameter
  importances stay the main search's) and ``control_finalist`` (the control's best
  trial re-trained on the finalist seeds, scored on test like the final choice);
* :class:`ControlRow`, the control's summary beside the leaderboard, and
  :func:`verdict`, a Welch t-test of the two test metrics over the finalist seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .protocol import LeaderboardRow, TrialLike
    from .spec import SearchSpec

#: The one control arm there is: ReLU, tuned alone.
CONTROL_FAMILIES = ("relu",)
CONTROL_PHASE = "control"
CONTROL_FINALIST_PHASE = "control_finalist"
CONTROL_PHASES = (CONTROL_PHASE, CONTROL_FINALIST_PHASE)
#: Phases whose trials Optuna asks (the others re-train a trial of the phase they name).
ASKED_PHASES = ("search", CONTROL_PHASE)
#: A finalist phase -> the phase of the trial it re-trains.
FINALIST_SOURCES = {"finalist": "search", CONTROL_FINALIST_PHASE: CONTROL_PHASE}
#: Phases whose compute the control must match, and the control's own.
MAIN_COMPUTE_PHASES = ("search", "finalist")
#: Significance level of the verdict's test.
ALPHA = 0.05

VERDICTS = ("helped", "did_not_help", "hurt", "inconclusive")


def control_study_name(study_name: str) -> str:
    """The control's own Optuna study, beside the search's."""
    return f"{study_name}-control"


def study_for_phase(study_name: str, phase: str) -> str:
    """The Optuna study a population or trial row of ``phase`` belongs to."""
    return control_study_name(study_name) if phase in CONTROL_PHASES else study_name


def control_spec(spec: SearchSpec) -> SearchSpec:
    """The spec the control trains by: ReLU only, everything else the search's.

    Same sampler, pruner, epochs, batch size, optimizer, ranges and finalist seeds;
    not raced (one family: every trial at the full ``epochs``); no warm start (the
    parent's trials are the main search's business).
    """
    return spec.model_copy(update={"families": list(CONTROL_FAMILIES), "control": None,
                                   "allocation": "equal", "warm_start_from": None})


def spec_for_phase(spec: SearchSpec, phase: str) -> SearchSpec:
    """The spec a population of ``phase`` is trained by."""
    return control_spec(spec) if phase in CONTROL_PHASES and spec.control else spec


# --------------------------------------------------------------------------- the verdict


@dataclass
class Verdict:
    """The one-line answer and what it rests on."""

    code: str  # one of VERDICTS
    message: str
    delta: float | None  # final choice's test mean minus the control's
    p_value: float | None


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided Welch t-test p-value of ``mean(a) != mean(b)``; None with under 2 values each.

    Seeds that all score alike (accuracy on a small test split often does) have zero
    variance: then equal means are p = 1 and different means p = 0, where scipy would
    give NaN or a precision warning.
    """
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return None
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    if se2 <= 1e-24:
        return 1.0 if math.isclose(ma, mb, rel_tol=0.0, abs_tol=1e-12) else 0.0
    t = (ma - mb) / math.sqrt(se2)
    df = se2 ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    from scipy.special import stdtr  # the t CDF without scipy.stats (~1.4 s to import)

    return float(min(1.0, 2.0 * stdtr(df, -abs(t))))


def verdict(choice: Sequence[float], control: Sequence[float], *, metric: str,
            choice_family: str, alpha: float = ALPHA) -> Verdict:
    """Did the final choice's test metric beat the equal-compute ReLU control's?

    ``choice`` and ``control`` are the test values of the two finalists' seeds. A
    Welch t-test at ``alpha``: significantly higher "helped", significantly lower
    "hurt", otherwise "did not help". A final choice that is ReLU itself never
    "helped": the activation search found nothing better than ReLU. Fewer than two
    test values on either side give "inconclusive".
    """
    if not choice or not control:
        return Verdict("inconclusive", "no verdict: the final choice or the ReLU control "
                       "has no test score", None, None)
    delta = sum(choice) / len(choice) - sum(control) / len(control)
    p = welch_p(choice, control)
    vs = f"{delta:+.3f} test {metric} vs ReLU tuned alone with the same compute"
    if p is None:
        return Verdict("inconclusive", f"no verdict: one test score per side ({vs}); "
                       "use finalist_seeds >= 2 for an interval", delta, None)
    where = f"({vs}, p={p:.3g})"
    if choice_family in CONTROL_FAMILIES:
        return Verdict("did_not_help", "searching activations did not help on this data: "
                       f"the final choice is {choice_family} itself {where}", delta, p)
    if p < alpha and delta > 0:
        return Verdict("helped", f"searching activations helped on this data {where}", delta, p)
    if p < alpha and delta < 0:
        return Verdict("hurt", f"searching activations hurt on this data {where}", delta, p)
    return Verdict("did_not_help", f"searching activations did not help on this data {where}",
                   delta, p)


# --------------------------------------------------------------------------- the row


@dataclass
class ControlRow:
    """The control arm's finalist and how it compares with the final choice.

    ``mean``/``ci95``: validation metric over the finalist seeds; ``test_mean`` /
    ``test_ci95``: its test metric (scored like the final choice's). ``candidate_epochs``
    is the control's compute (its search and finalists), ``search_candidate_epochs`` the
    main search's; both None where the caller did not count them.
    """

    family: str
    mean: float
    ci95: float
    test_mean: float | None
    test_ci95: float | None
    n_seeds: int
    values: list[float]
    test_values: list[float]
    trials: int
    pruned: int
    family_params: dict[str, Any]
    hparams: dict[str, Any]
    source_trial_number: int | None
    verdict: str
    message: str
    delta_test: float | None
    p_value: float | None
    candidate_epochs: int | None = None
    search_candidate_epochs: int | None = None
    compute: dict[str, int] = field(default_factory=dict)

    def set_compute(self, compute: dict[str, int]) -> None:
        """Fill in the candidate-epochs of both arms from per-phase counts."""
        self.compute = {p: int(compute.get(p, 0)) for p in (*MAIN_COMPUTE_PHASES, *CONTROL_PHASES)}
        self.candidate_epochs = sum(self.compute[p] for p in CONTROL_PHASES)
        self.search_candidate_epochs = sum(self.compute[p] for p in MAIN_COMPUTE_PHASES)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def control_row(trials: Sequence[TrialLike], winner: LeaderboardRow | None, metric: str
                ) -> ControlRow | None:
    """The control's row from a search's trials; None until its finalists finished."""
    from .protocol import mean_interval

    runs = [t for t in trials if t.phase == CONTROL_FINALIST_PHASE and t.state == "complete"
            and t.value is not None and math.isfinite(t.value)]
    if not runs:
        return None
    searched = [t for t in trials if t.phase == CONTROL_PHASE]
    values = [float(t.value) for t in runs if t.value is not None]
    tests = [float(t.test_value) for t in runs if t.test_value is not None]
    mean, half = mean_interval(values)
    test_mean, test_half = mean_interval(tests) if tests else (None, None)
    choice = _winner_tests(trials, winner)
    v = verdict(choice, tests, metric=metric,
                choice_family=winner.family if winner is not None else "")
    first = runs[0]
    return ControlRow(
        family=first.family, mean=mean, ci95=half, test_mean=test_mean, test_ci95=test_half,
        n_seeds=len(values), values=values, test_values=tests, trials=len(searched),
        pruned=sum(t.state == "pruned" for t in searched),
        family_params=dict(first.family_params), hparams=dict(first.hparams),
        source_trial_number=first.source_trial_number, verdict=v.code, message=v.message,
        delta_test=v.delta, p_value=v.p_value,
    )


def _winner_tests(trials: Sequence[TrialLike], winner: LeaderboardRow | None) -> list[float]:
    if winner is None:
        return []
    return [float(t.test_value) for t in trials
            if t.phase == "finalist" and t.family == winner.family and t.state == "complete"
            and t.test_value is not None]


def control_from_dict(data: dict[str, Any] | None) -> ControlRow | None:
    """A :class:`ControlRow` from its JSON (the API's leaderboard, a search's ``best``)."""
    if not data:
        return None
    names = ControlRow.__dataclass_fields__
    return ControlRow(**{k: v for k, v in data.items() if k in names})
