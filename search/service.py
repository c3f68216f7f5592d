"""Creating searches and loading what they train on: the entry points the CLI and API call."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState
from sqlalchemy.orm import Session

from core.errors import InvalidInput, NotFound
from models.records import TensorData
from store import repo
from store.artifacts import get_artifact_bytes

from .datasets import Dataset, Splits, resolve_dataset, split_dataset
from .factories import make_pruner, make_sampler
from .spec import SearchSpec
from .storage import optuna_storage


def register_dataset(session: Session, *, dataset: Dataset, name: str | None = None,
                     owner: str | None = None) -> Any:
    """Store a dataset as a named, versioned artifact (same content: same row)."""
    return repo.add_dataset(
        session, name=name or dataset.name, data_bytes=dataset.to_npz_bytes(),
        meta=dataset_meta(dataset), owner=owner,
    )


def dataset_meta(dataset: Dataset) -> dict[str, Any]:
    """The columns of the dataset row."""
    return {
        "content_hash": dataset.content_hash(),
        "source": dataset.source,
        "task": dataset.task,
        "n_rows": dataset.n_rows,
        "n_features": dataset.n_features,
        "n_classes": dataset.n_classes,
        "input_shape": list(dataset.input_shape) if dataset.input_shape else None,
        "schema": dataset.schema(),
    }


def find_or_register_dataset(session: Session, spec: SearchSpec, owner: str | None = None) -> Any:
    """The dataset row a spec names: ``owner``'s stored dataset by name, else a built-in or a file.

    Names are per owner; ``owner=None`` (the CLI, auth off) looks in every namespace.
    """
    try:
        if spec.dataset_version is not None:
            return repo.get_dataset_version(session, name=spec.dataset,
                                            version=spec.dataset_version, owner=owner)
        return repo.latest_dataset(session, name=spec.dataset, owner=owner)
    except NotFound:
        if spec.dataset_version is not None:
            raise
    dataset = resolve_dataset(spec.dataset, label=spec.label, task=spec.task)
    return register_dataset(session, dataset=dataset, owner=owner)


def spec_for_dataset(spec: SearchSpec, row: Any) -> SearchSpec:
    """``spec`` completed with what dataset ``row`` says about its rows (modality, input
    shape, vocabulary), so every later ``spec.arch_spec()`` builds the right network.

    Raises InvalidInput (422) where the architecture cannot read these rows: an image or
    sequence architecture on tabular data, a tabular one on token ids.
    """
    if spec.is_module:
        return spec  # the user's module reads its rows itself
    schema = row.schema if isinstance(row.schema, dict) else {}
    modality = schema.get("modality") or "tabular"
    return spec.with_inputs(modality=modality, input_shape=row.input_shape,
                            vocab_size=schema.get("vocab_size"))


def new_study_name() -> str:
    return f"actsearch-{uuid.uuid4().hex[:12]}"


def create_study(spec: SearchSpec, study_name: str, storage_url: str) -> optuna.Study:
    """The Optuna study of a search, beside our tables in the same database."""
    directions = ["maximize", "minimize"] if spec.multi_objective else ["maximize"]
    return optuna.create_study(
        study_name=study_name, storage=optuna_storage(storage_url), directions=directions,
        sampler=make_sampler(spec.sampler, spec.seed, spec.multi_objective),
        pruner=make_pruner("none" if spec.multi_objective else spec.pruner, spec.epochs),
    )


def read_study(study_name: str, storage_url: str) -> optuna.Study:
    """A search's study for reading its trials (no sampler or pruner: nothing is asked).

    Random sampler: ``load_study``'s default would build a TPE sampler that no read
    uses, which costs more than reading a small study's trials.
    """
    return optuna.load_study(study_name=study_name, storage=optuna_storage(storage_url),
                             sampler=optuna.samplers.RandomSampler())


def open_study(spec: SearchSpec, study_name: str, storage_url: str,
               seed: int | None = None) -> optuna.Study:
    """Re-open a search's study with its sampler and pruner (the one place that does).

    ``seed`` seeds the sampler; default the search's seed. Each population opens
    the study with its own seed (:func:`search.coordinator.steps.population_seed`),
    so fresh samplers do not replay the same random draws population after population.
    """
    return optuna.load_study(
        study_name=study_name, storage=optuna_storage(storage_url),
        sampler=make_sampler(spec.sampler, spec.seed if seed is None else seed,
                             spec.multi_objective),
        pruner=make_pruner("none" if spec.multi_objective else spec.pruner, spec.epochs),
    )


_WARM_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def _warm_start_mismatch(parent: SearchSpec, child: SearchSpec) -> list[str]:
    """What differs between two specs in ways that make the parent's trials meaningless.

    Families (in order: they are the choices of Optuna's ``family`` parameter,
    and Optuna refuses a categorical whose choices differ), the architecture
    and the objective (the number of values each trial holds).
    """
    diffs = []
    if parent.families != child.families:
        diffs.append(f"families {parent.families} vs {child.families} (same names, same order)")
    if parent.arch_spec().to_dict() != child.arch_spec().to_dict():
        diffs.append(f"architecture {parent.architecture!r} vs {child.architecture!r}")
    if parent.objective != child.objective:
        diffs.append(f"objective {parent.objective!r} vs {child.objective!r}")
    return diffs


def check_warm_start(session: Session, spec: SearchSpec) -> None:
    """NotFound for an unknown parent, InvalidInput naming what differs for an incompatible
    one: before anything is registered for the new search (a refused search leaves nothing)."""
    if spec.warm_start_from is None:
        return
    parent = repo.get_search(session, search_id=spec.warm_start_from)
    diffs = _warm_start_mismatch(SearchSpec.model_validate(parent.spec), spec)
    if diffs:
        raise InvalidInput(f"warm_start_from: search {parent.id} cannot seed this search; "
                           f"its {'; '.join(diffs)} differ")


def warm_start_trials(session: Session, spec: SearchSpec,
                      storage_url: str) -> list[optuna.trial.FrozenTrial]:
    """The parent search's finished trials, ready for ``study.add_trials`` (or [] if none asked).

    Complete and pruned trials are copied with their parameters, distributions,
    values and intermediate values, so samplers (TPE, GP, ...) and pruners learn
    from them; running, failed and waiting ones are not. Each copy is tagged with
    the search and trial it came from. Raises NotFound for an unknown parent and
    InvalidInput, naming what differs, for an incompatible one.
    """
    if spec.warm_start_from is None:
        return []
    check_warm_start(session, spec)
    parent = repo.get_search(session, search_id=spec.warm_start_from)
    parent_study = read_study(parent.study_name, storage_url)
    copies = []
    for t in parent_study.get_trials(deepcopy=False, states=_WARM_STATES):
        copies.append(optuna.trial.create_trial(
            state=t.state, values=t.values, params=t.params, distributions=t.distributions,
            intermediate_values=t.intermediate_values,
            user_attrs={**t.user_attrs, "warm_start": {"search_id": parent.id,
                                                       "trial_number": t.number}},
            system_attrs=t.system_attrs,
        ))
    return copies


def _default_name(spec: SearchSpec) -> str:
    if spec.is_module:
        return f"{spec.dataset} {spec.module_arch().name}"
    arch = spec.architecture if isinstance(spec.architecture, str) else spec.arch_spec().short()
    return f"{spec.dataset} {arch}"


def create_search(*, session: Session, spec: SearchSpec, storage_url: str,
                  owner: str | None = None, name: str | None = None,
                  run_here: bool = False) -> Any:
    """A search row plus its Optuna study; training starts when a runner picks it up.

    With ``spec.warm_start_from`` the new study starts holding that search's
    finished trials (see :func:`warm_start_trials`); the budget counts only new ones.

    ``run_here`` creates it already ``running``: the caller (``actsearch search``)
    runs it itself, and a ``serve`` runner on the same database must not claim it.
    """
    dataset_row = find_or_register_dataset(session, spec, owner)
    spec = spec_for_dataset(spec, dataset_row)
    parent_trials = warm_start_trials(session, spec, storage_url)
    study_name = new_study_name()
    # Optuna writes through its own connection: create the study before this
    # session takes SQLite's write lock, and remove it if our row cannot be made.
    study = create_study(spec, study_name, storage_url)
    study.set_user_attr("dataset", f"{dataset_row.name} v{dataset_row.version}")
    try:
        if parent_trials:
            study.set_user_attr("warm_start_from", spec.warm_start_from)
            study.add_trials(parent_trials)
        row = repo.create_search(
            session, name=name or _default_name(spec), study_name=study_name,
            dataset_id=dataset_row.id, spec=spec.model_dump(mode="json"), owner=owner,
        )
        if run_here:
            repo.set_search_state(session, search_id=row.id, state="running")
    except BaseException:
        optuna.delete_study(study_name=study_name, storage=optuna_storage(storage_url))
        raise
    return row


@dataclass
class PreparedData:
    """The splits a search trains on, and what export needs to undo the preprocessing.

    ``key`` names what the tensors depend on (database, dataset, split parameters; set
    by :func:`search.coordinator.data.prepared_data`): a warm training process that holds
    a dataset under this key is not sent it again.
    """

    dataset: Dataset
    splits: Splits
    key: str = ""
    _on_device: dict[str, TensorData] = field(default_factory=dict, repr=False, compare=False)

    def tensor_data(self, device: str | None = None) -> TensorData:
        """The training and validation arrays; with an accelerator ``device``, torch tensors
        already there, moved once and kept with this object (a long-lived worker's data
        cache then saves the host-to-device copy of every later population)."""
        s = self.splits
        data = TensorData(X_train=s.X_train, y_train=s.y_train, X_val=s.X_val, y_val=s.y_val,
                          task=self.dataset.task, n_outputs=self.n_outputs)
        if device is None or device == "cpu":
            return data
        held = self._on_device.get(device)
        if held is None:
            from models.engine import tensors_on

            held = self._on_device[device] = tensors_on(data, device)
        return held

    @property
    def nbytes(self) -> int:
        """Host bytes of the arrays (what a data cache counts)."""
        s = self.splits
        return int(sum(a.nbytes for a in (s.X_train, s.y_train, s.X_val, s.y_val, s.X_test,
                                          s.y_test)))

    @property
    def n_outputs(self) -> int:
        return self.dataset.n_classes if self.dataset.task == "classification" else 1

    @property
    def n_inputs(self) -> int:
        return int(self.splits.X_train.shape[1])


def prepare_data(session: Session, *, dataset_id: int, spec: SearchSpec) -> PreparedData:
    """Load a stored dataset and split it as the spec says (seeded, scaler fitted on train)."""
    row = repo.get_dataset(session, dataset_id=dataset_id)
    dataset = Dataset.from_npz_bytes(get_artifact_bytes(session, row.artifact_id))
    splits = split_dataset(dataset, seed=spec.seed, val_fraction=spec.val_fraction,
                           test_fraction=spec.test_fraction)
    return PreparedData(dataset=dataset, splits=splits)
