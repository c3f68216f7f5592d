"""One check of a search spec against the service's limits, for every way a search is made.

``POST /searches``, a schedule at creation and each of its firings all call
:func:`validate_search_spec`, so a schedule can never run what a direct submission
would refuse (widths, layers, trials, epochs, the task, the training memory).
It needs only the dataset's shape (:class:`DataShape`): a built-in's comes from its
options without generating it, so a refused spec registers nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import InvalidInput
from core.settings import LimitSettings, TrainingSettings
from models.sizing import estimate_candidate

from .datasets.builtins import BuiltinEstimate
from .spec import SearchSpec

__all__ = ["DataShape", "check_training_memory", "validate_search_spec"]


@dataclass(frozen=True)
class DataShape:
    """What a spec's checks need to know of its dataset."""

    name: str
    n_rows: int
    n_features: int
    n_outputs: int
    task: str

    @classmethod
    def of_row(cls, row: Any) -> DataShape:
        """From a stored dataset row."""
        outputs = (row.n_classes or 2) if row.task == "classification" else 1
        return cls(name=f"{row.name} v{row.version}", n_rows=row.n_rows,
                   n_features=row.n_features, n_outputs=outputs, task=row.task)

    @classmethod
    def of_builtin(cls, est: BuiltinEstimate) -> DataShape:
        """From a built-in's estimate (nothing generated)."""
        return cls(name=f"builtin {est.name}", n_rows=est.n_rows, n_features=est.n_features,
                   n_outputs=est.n_outputs, task=est.task)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_training_memory(spec: SearchSpec, shape: DataShape, training: TrainingSettings) -> None:
    """InvalidInput when one population of this spec would need more memory than the budget.

    The population is one candidate unless ``population_size`` asks for more (the
    automatic K is chosen within the budget). Estimated, not measured: nothing is built.
    """
    arch = spec.arch_spec()
    est = estimate_candidate(arch, spec.families, shape.n_features, shape.n_outputs,
                             spec.batch_size)
    k = spec.population_size or 1
    data = 4 * shape.n_rows * (shape.n_features + 1)
    need = est.population_bytes(k) + data
    budget = training.memory_budget_mb * 2**20
    if need > budget:
        pop = f"a population of {k} candidates" if k > 1 else "one candidate"
        widths = [*arch.conv_channels, *arch.hidden]
        net = f"{arch.kind} with {len(widths)} hidden layers up to {max(widths)} wide"
        raise InvalidInput(
            f"architecture: training {pop} ({net}) on {shape.name} would need about {_gib(need)} "
            f"({est.params:,} parameters each with gradient and Adam state, activations of "
            f"batch_size {spec.batch_size}, the data), above this service's training memory "
            f"budget of {_gib(budget)} (ACTSEARCH_TRAINING__MEMORY_BUDGET_MB); use fewer or "
            "narrower layers, a smaller batch_size"
            + (" or population_size" if k > 1 else "")
        )


def validate_search_spec(spec: SearchSpec, *, shape: DataShape | None, limits: LimitSettings,
                         training: TrainingSettings | None = None, where: str = "") -> None:
    """Every limit a search obeys, or InvalidInput naming the field and the limit.

    ``shape`` None (a local file a CLI schedule will read later) checks what does not
    depend on the data. ``where`` prefixes the field names (``"template.spec."``).
    """
    if spec.trials > limits.max_trials:
        raise InvalidInput(f"{where}trials: {spec.trials} is above this service's limit of "
                           f"{limits.max_trials}")
    if spec.epochs > limits.max_epochs:
        raise InvalidInput(f"{where}epochs: {spec.epochs} is above this service's limit of "
                           f"{limits.max_epochs}")
    # the fields that come from the data (an image's shape, a vocabulary) are checked
    # once the spec carries the dataset's inputs
    spec.arch_spec().validate(n_inputs=shape.n_features if shape else None,
                              max_width=limits.max_width, max_layers=limits.max_layers,
                              require_data=spec.inputs is not None)
    if shape is None:
        return
    if spec.task is not None and spec.task != shape.task:
        raise InvalidInput(f"{where}task: dataset {shape.name} is {shape.task}, not {spec.task}")
    if training is not None:
        check_training_memory(spec, shape, training)
