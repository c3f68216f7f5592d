"""The study's scales: which datasets, families, seeds, epochs and budgets each one runs.

One frozen dataclass per scale so a run's settings are plain data, written into
``results.json`` verbatim, and the report can say exactly what was done.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FIXED = ("relu", "gelu", "tanh")
TRAINABLE = ("vaf", "rational", "spline", "agsig", "frelu", "affine")
BASELINE = "relu"
METANEURON = "vaf"


@dataclass(frozen=True)
class Scale:
    """Everything one scale runs.

    Attributes:
        name: ``tiny`` (the test), ``small`` (the default, <= 15 min on 2 cores) or ``full``.
        datasets: Part A datasets, built-in names; options per name in ``dataset_options``.
        families: Part A families (fixed and trainable), default parameters each.
        seeds: replications; seed s sets the weight init *and* the batch order.
        lrs: the learning-rate grid; each (family, dataset) keeps the lr whose mean
            final validation metric over seeds is best.
        epochs: epochs of every Part A / C run (equal for all families of a dataset);
            ``dataset_epochs`` overrides it per dataset (the large teacher set gets fewer).
        architecture: the MLP every family uses.
        batch_size: rows per step.
        search_datasets: Part B datasets (real embedded searches).
        search_families: the full search's families (ReLU is among them).
        search_trials_per_family: tuning trials per family in the full search; the
            ReLU-only search gets ``len(search_families)`` times as many (same total).
        search_epochs: epochs per search trial.
        search_finalist_seeds: re-runs of each search's finalists.
        sweep_datasets: Part C width/depth sweeps of the meta-neuron.
        widths: meta-neuron widths swept (depth 1).
        depths: meta-neuron depths swept (at ``sweep_depth_width``).
        sweep_depth_width: the width of the depth sweep (the family's default, 4).
    """

    name: str
    datasets: tuple[str, ...]
    families: tuple[str, ...]
    seeds: tuple[int, ...]
    lrs: tuple[float, ...]
    epochs: int
    search_datasets: tuple[str, ...]
    search_families: tuple[str, ...]
    search_trials_per_family: int
    search_epochs: int
    search_finalist_seeds: int
    sweep_datasets: tuple[str, ...]
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    sweep_depth_width: int = 4
    architecture: str = "mlp:64,64"
    batch_size: int = 64
    dataset_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset_epochs: dict[str, int] = field(default_factory=dict)

    def epochs_for(self, dataset: str) -> int:
        """Epochs of every family on ``dataset`` (the same for all of them)."""
        return self.dataset_epochs.get(dataset, self.epochs)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able (tuples become lists)."""
        return asdict(self)


_ALL = FIXED + TRAINABLE
_DATASETS = ("digits", "breast_cancer", "wine", "diabetes", "teacher")

SCALES: dict[str, Scale] = {
    "tiny": Scale(
        name="tiny", datasets=("wine",), families=("relu", "vaf"), seeds=(0, 1),
        lrs=(1e-3, 1e-2), epochs=2, search_datasets=("wine",), search_families=("relu", "vaf"),
        search_trials_per_family=1, search_epochs=2, search_finalist_seeds=2,
        sweep_datasets=("wine",), widths=(1, 2), depths=(1, 2), sweep_depth_width=2,
        architecture="mlp:16,16",
    ),
    "small": Scale(
        name="small", datasets=_DATASETS, families=_ALL, seeds=(0, 1, 2),
        lrs=(1e-3, 3e-3, 1e-2), epochs=40,
        search_datasets=("digits", "diabetes"),
        search_families=_ALL, search_trials_per_family=4, search_epochs=20,
        search_finalist_seeds=3, sweep_datasets=("digits", "breast_cancer", "wine", "diabetes"),
        widths=(1, 2, 4, 8, 16), depths=(1, 2, 3),
        dataset_options={"teacher": {"size": 10000}}, dataset_epochs={"teacher": 20},
    ),
    "full": Scale(
        name="full", datasets=_DATASETS, families=_ALL, seeds=(0, 1, 2, 3, 4),
        lrs=(3e-4, 1e-3, 3e-3, 1e-2), epochs=60,
        search_datasets=("digits", "breast_cancer", "wine", "diabetes"),
        search_families=_ALL, search_trials_per_family=8, search_epochs=30,
        search_finalist_seeds=5, sweep_datasets=_DATASETS,
        widths=(1, 2, 4, 8, 16), depths=(1, 2, 3),
        dataset_options={"teacher": {"size": 30000}}, dataset_epochs={"teacher": 30},
    ),
}
