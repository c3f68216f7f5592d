"""Pydantic schemas of the HTTP API, kept apart from the tables in ``store/tables.py``.

Naming ladder per resource (full-stack-fastapi-template): ``XCreate`` is what a
client sends, ``XPublic`` what it gets back for one object, ``XsPublic`` a page of
them as ``{data, count}`` where ``count`` is the total before paging.

One module of about 500 lines on purpose: the request/response models reference each
other (a search's detail embeds its progress, trials and leaderboard rows), and OpenAPI
is generated from them together; split per resource they would import each other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from core.errors import public_message
from search.spec import SearchSpec

SearchState = Literal["pending", "running", "finalizing", "interrupted", "complete", "failed",
                      "cancelled"]
TrialState = Literal["running", "complete", "pruned", "failed"]
Phase = Literal["search", "finalist", "control", "control_finalist"]
Task = Literal["classification", "regression"]
ArchitectureKind = Literal["mlp", "cnn", "transformer", "resnet"]
TrialSort = Literal["value", "created", "family", "duration"]
SortOrder = Literal["asc", "desc"]


#: A stored error as served: the message without tracebacks or server file paths (rows
#: written before errors were stored that way, or by code that stored one, still hold them).
PublicError = Annotated[str | None, AfterValidator(public_message)]


class _FromRow(BaseModel):
    """Schemas read straight from ORM rows (attributes, not dict keys)."""

    model_config = ConfigDict(from_attributes=True)


# --------------------------------------------------------------------------- health


class ComponentHealth(BaseModel):
    ok: bool
    detail: str


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"]
    mode: Literal["embedded", "distributed"]
    version: str
    database: ComponentHealth
    broker: ComponentHealth | None = Field(
        default=None, description="null in embedded mode (no broker configured)"
    )


# --------------------------------------------------------------------------- activations


class ActivationParameter(BaseModel):
    name: str
    kind: Literal["float", "int", "categorical"]
    default: Any
    structural: bool
    learned: bool = Field(description="the value initialises a parameter trained with the weights")
    help: str = ""
    low: float | None = None
    high: float | None = None
    log: bool | None = None
    step: float | None = None
    choices: list[Any] | None = None


class ActivationPublic(BaseModel):
    name: str
    formula: str
    trainable: bool
    pointwise: bool
    weight_init: str
    dropout: str
    reference: str | None = None
    curve_label: str = Field(default="activation", description="what the curve view shows: "
                             "'activation', or 'gate response' for gated units (glu, swiglu, "
                             "...): the multiplier applied to the value half, against the gate "
                             "pre-activation")
    parameters: list[ActivationParameter]


class ActivationsPublic(BaseModel):
    data: list[ActivationPublic]
    count: int


# --------------------------------------------------------------------------- datasets


class DatasetBuiltinCreate(BaseModel):
    """Register one of the built-in datasets (optionally generated with options)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"builtin": "two_spirals", "name": "spirals-noisy",
                                         "options": {"n": 2000, "noise": 0.1}}]},
    )

    builtin: str = Field(description="digits, breast_cancer, wine, iris, diabetes, mnist1d, "
                                     "two_spirals, teacher, periodic, smooth_regression, ... "
                                     "(GET /datasets/builtins lists them)")
    name: str | None = Field(default=None, description="stored name; default: the builtin's")
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="generation options of the builtin")


class DatasetVersion(_FromRow):
    id: int
    version: int
    content_hash: str
    n_rows: int
    created_at: datetime


class DatasetPublic(_FromRow):
    id: int
    name: str
    version: int
    source: str
    task: str
    n_rows: int
    n_features: int
    n_classes: int | None
    input_shape: list[int] | None
    content_hash: str
    owner: str | None = Field(default=None, description="who created it (null: auth was off)")
    created_at: datetime


class DatasetDetail(DatasetPublic):
    schema_: dict[str, Any] | None = Field(
        default=None, alias="schema",
        description="feature names, label, class names and counts (or target stats)",
    )
    classes: list[str] | None = None
    versions: list[DatasetVersion] = Field(description="every version of this name, newest first")


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


class BuiltinPublic(BaseModel):
    name: str
    description: str
    task: str
    defaults: dict[str, Any]
    limits: dict[str, list[float]]


class BuiltinsPublic(BaseModel):
    data: list[BuiltinPublic]
    count: int


# --------------------------------------------------------------------------- searches


class SearchCreate(SearchSpec):
    """A search request: the spec, plus an optional display name.

    Over HTTP ``dataset`` names a stored dataset (see ``GET /datasets``) or a
    built-in; never a file path on the server: upload files with ``POST /datasets``.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "dataset": "iris", "architecture": "mlp:32,32", "families": ["relu", "prelu", "gelu"],
            "trials": 24, "epochs": 20, "name": "iris smoke test",
        }]},
    )

    name: str | None = Field(default=None, max_length=200, description="display name")

    def spec(self) -> SearchSpec:
        """The spec without the API-only fields."""
        return SearchSpec.model_validate(self.model_dump(exclude={"name"}))


class SearchPublic(_FromRow):
    id: int
    name: str
    study_name: str = Field(description="the Optuna study (open it with optuna-dashboard)")
    dataset_id: int
    state: SearchState
    error: PublicError
    best: dict[str, Any] | None = Field(description="the final choice once the search is done")
    spec: dict[str, Any]
    owner: str | None = Field(default=None, description="who created it (null: auth was off)")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ControlProgress(BaseModel):
    """The equal-compute ReLU control arm (``control: relu``) while it runs and after."""

    family: str
    candidate_epochs: int = Field(description="candidate-epochs the control trained so far")
    target_candidate_epochs: int = Field(
        description="candidate-epochs the search trained (search phase + finalists): "
                    "the control's budget")
    trials: int = Field(description="control trials recorded")
    running: int = Field(description="control candidates training now")
    finalists_done: bool


class SearchProgress(BaseModel):
    state: SearchState
    phase: Literal["pending", "search", "finalists", "control", "done"]
    budget: int = Field(description="search-phase trials planned (trials per family x families)")
    done: int = Field(description="search-phase trials finished (complete + pruned + failed)")
    complete: int
    pruned: int
    failed: int
    running: int = Field(description="candidates in populations not yet finished")
    best_value: float | None
    best_family: str | None
    best_trial_id: int | None
    finalists_total: int
    finalists_done: int
    elapsed_s: float | None
    control: ControlProgress | None = Field(
        default=None, description="the control arm's progress (null: no control asked)")


AnalysisState = Literal["pending", "running", "done", "failed"]


class SearchAnalysis(BaseModel):
    """The curve analysis (closed-form fits, distillation), run after the leaderboard is stored."""

    state: AnalysisState | None = Field(
        description="pending -> running -> done | failed; null: nothing to analyse (no "
                    "complete trial of a trainable family, or the search is not complete)")
    error: PublicError = Field(default=None, description="why the analysis failed")


class SearchDetail(SearchPublic):
    progress: SearchProgress
    analysis: SearchAnalysis


class SearchesPublic(BaseModel):
    data: list[SearchPublic]
    count: int


class LeaderboardRowPublic(BaseModel):
    rank: int
    family: str
    baseline: bool
    mean: float
    ci95: float
    n_seeds: int
    values: list[float]
    delta_vs_baseline: float | None
    test_mean: float | None = Field(description="scored for the final choice only")
    test_ci95: float | None
    n_params: int | None
    flops: int | None
    family_params: dict[str, Any]
    hparams: dict[str, Any]
    source_trial_number: int | None
    search_trials: int
    search_pruned: int
    best_search_value: float | None
    budget_epochs: int | None = Field(
        default=None, description="epochs each of the family's search trials was given")
    candidate_epochs: int | None = Field(
        default=None, description="epochs the family's search trials trained, summed")
    rung: int | None = Field(default=None, description="the last race rung it ran in "
                             "(null: not raced)")


class StoppedFamilyPublic(BaseModel):
    family: str
    rung: int = Field(description="the race rung it stopped at")
    trials: int
    epochs: int
    candidate_epochs: int
    best_value: float | None = Field(description="its best validation value at that rung")


class ControlPublic(BaseModel):
    """The equal-compute ReLU control (``control: relu``) against the final choice."""

    family: str
    mean: float | None = Field(description="validation metric over the finalist seeds")
    ci95: float | None
    test_mean: float | None = Field(description="test metric over the finalist seeds")
    test_ci95: float | None
    n_seeds: int
    values: list[float]
    test_values: list[float]
    trials: int = Field(description="the control's tuning trials (ReLU only)")
    pruned: int
    family_params: dict[str, Any]
    hparams: dict[str, Any]
    source_trial_number: int | None = Field(description="its best trial, in the study "
                                            "<study_name>-control")
    verdict: Literal["helped", "did_not_help", "hurt", "inconclusive"]
    message: str = Field(description="the one-line verdict")
    delta_test: float | None = Field(description="final choice's test mean minus the control's")
    p_value: float | None = Field(description="Welch t-test over the finalist seeds")
    candidate_epochs: int | None = Field(description="the control's compute (search + finalists)")
    search_candidate_epochs: int | None = Field(description="the search's compute it matches")
    compute: dict[str, int] = Field(description="candidate-epochs per phase")


class LeaderboardPublic(BaseModel):
    search_id: int
    state: SearchState
    metric: str
    winner: str | None
    rows: list[LeaderboardRowPublic]
    stopped: list[StoppedFamilyPublic] = Field(
        default_factory=list, description="families the race stopped (allocation: race), "
        "with the budget they received; not ranked")
    control: ControlPublic | None = Field(
        default=None, description="the equal-compute ReLU control and the verdict (null: not "
                                  "asked, or not finished)")


# --------------------------------------------------------------------------- trials


class TrialPublic(_FromRow):
    id: int
    search_id: int
    trial_number: int | None
    phase: Phase
    family: str
    family_params: Any
    hparams: dict[str, Any]
    seed: int
    state: TrialState
    value: float | None = Field(description="validation metric (accuracy, or R^2)")
    best_value: float | None
    test_value: float | None
    n_params: int | None
    flops: int | None
    device: str | None
    duration_s: float | None
    started_at: datetime | None
    finished_at: datetime | None
    source_trial_number: int | None
    error: PublicError = Field(default=None, description="why a failed trial failed")


class TrialsPublic(BaseModel):
    data: list[TrialPublic]
    count: int


class EpochPublic(BaseModel):
    epoch: int
    train_loss: float | None
    val_loss: float | None
    val_metric: float | None
    elapsed_s: float | None


class PreactSummary(BaseModel):
    layer: int
    epoch: int
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    quantiles: dict[str, Any]
    dead_fraction: float | None


class TrialDetail(TrialPublic):
    population_id: int | None
    error: PublicError
    has_weights: bool
    epochs: list[EpochPublic]
    preact_stats: list[PreactSummary]


class CurvePublic(BaseModel):
    layer: int
    epoch: int
    params: dict[str, Any]
    x: list[float | None] = Field(description="grid; null where not finite")
    y: list[Any] = Field(description="nested lists of shape y_shape: (units or 1, len(x))")
    y_shape: list[int]


class HistogramPublic(BaseModel):
    layer: int
    epoch: int
    hist: list[float | None]
    edges: list[float | None]
    min: float | None
    max: float | None
    dead_fraction: float | None


class FitPublic(BaseModel):
    layer: int
    epoch: int
    unit: int | None = Field(None, description="null: the layer's (median) curve")
    kind: Literal["closed_form", "linear", "distilled"]
    family: str
    params: dict[str, Any]
    rmse: float | None = Field(description="density-weighted RMSE over the observed range")
    max_error: float | None = Field(description="max abs error over the observed range")
    r2: float | None
    extra: dict[str, Any] = Field(default_factory=dict)


class NetworkAnalysisPublic(BaseModel):
    """Distillation and linear-layer merging of one trained network, measured on its data."""

    epoch: int
    task: str
    before: dict[str, float | None] = Field(
        description="metric (accuracy or R^2) of the learned network: validation, test "
                    "(test only for the final choice's finalists, as the protocol scores it)")
    size: dict[str, int] = Field(description="hidden_layers, params, flops (one row)")
    distilled: dict[str, Any] = Field(
        description="every activation replaced by its piecewise-linear distillation: "
                    "rel_error, validation/test before, after and change, speedup (learned_s / "
                    "distilled_s on one batch), per layer knots and max_error")
    merge: dict[str, Any] = Field(
        description="per layer: near_linear, mergeable or the reason not, metric after merging "
                    "it into the next linear layer, size_after; 'all': every mergeable merged")


class TrialActivations(BaseModel):
    trial_id: int
    family: str
    family_params: Any
    curves: list[CurvePublic]
    histograms: list[HistogramPublic]
    fits: list[FitPublic] = Field(
        default_factory=list,
        description="analysis of each layer's final learned curve: closed forms (best first), "
                    "the line (extra.near_linear: prunable/mergeable) and the distilled "
                    "piecewise-linear curve (extra: knots, speed-up)",
    )
    network: NetworkAnalysisPublic | None = Field(
        None, description="finalists only (their weights are stored): the whole network with "
                          "distilled activations and with near-linear layers merged, measured",
    )
    analysis: SearchAnalysis | None = Field(
        None, description="the search's curve analysis: fits and network appear once it is done",
    )


class ErrorPublic(BaseModel):
    detail: Any


# --------------------------------------------------------------------------- schedules

ScheduleState = Literal["active", "paused"]


class RerunTemplate(BaseModel):
    """Re-run a search spec on the latest version of its dataset at every firing."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["rerun"]
    spec: SearchSpec = Field(description="a search spec whose dataset is a stored dataset name "
                                         "or a builtin (no dataset_version: always the latest)")


class AddTrialsTemplate(BaseModel):
    """Add trials to a search: each firing makes a new search warm-started from it."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["add_trials"]
    search_id: int = Field(ge=1, description="the search to continue")
    trials: int = Field(ge=1, description="trials per firing, split evenly across its families")


class ScheduleCreate(BaseModel):
    """A recurring search: when (cron, read in ``timezone``) and what (the template)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "name": "nightly digits", "cron": "0 3 * * *", "timezone": "UTC",
            "template": {"kind": "rerun", "spec": {"dataset": "digits", "architecture": "mlp:64",
                                                   "families": ["relu", "gelu"], "trials": 24}},
        }]},
    )

    name: str | None = Field(default=None, min_length=1, max_length=200,
                             description="display name; default: made from the template")
    cron: str = Field(max_length=200, description='5 fields ("0 3 * * *"), an alias ("@daily") '
                                                  'or 6 fields with seconds last ("* * * * * */30")')
    timezone: str = Field(default="UTC", max_length=64, description="IANA zone the cron is read in")
    template: RerunTemplate | AddTrialsTemplate = Field(discriminator="kind")

    def template_dict(self) -> dict[str, Any]:
        """The template as sent (unset spec options stay unset, so defaults apply at firing)."""
        return self.template.model_dump(mode="json", exclude_unset=True)


class SchedulePublic(_FromRow):
    id: int
    name: str
    cron: str
    timezone: str
    template: dict[str, Any]
    state: ScheduleState
    next_run_at: datetime | None = Field(description="null while paused")
    last_run_at: datetime | None
    last_search_id: int | None = Field(description="the search the last successful firing made")
    last_error: PublicError = Field(description="why the last firing made no search, if it failed")
    run_count: int = Field(description="firings so far, failed ones included")
    owner: str | None = Field(default=None, description="who created it (null: auth was off)")
    created_at: datetime


class ScheduleRunPublic(_FromRow):
    """A search a schedule created."""

    id: int
    name: str
    state: SearchState
    dataset_id: int
    error: PublicError
    best: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ScheduleDetail(SchedulePublic):
    runs: list[ScheduleRunPublic] = Field(description="searches it created, newest first")


class SchedulesPublic(BaseModel):
    data: list[SchedulePublic]
    count: int


# --------------------------------------------------------------------------- auth


class MePublic(BaseModel):
    owner: str | None = Field(description="the key's owner; null when auth is off")
    admin: bool
    auth_enabled: bool


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"owner": "alice", "name": "alice's laptop"}]})

    owner: str = Field(min_length=1, max_length=200,
                       description="letters, digits and _.@+- (starting with a letter or digit)")
    name: str | None = Field(default=None, min_length=1, max_length=200,
                             description="a label to tell keys apart")
    admin: bool = Field(default=False, description="may manage keys and see every owner's data")


class ApiKeyPublic(_FromRow):
    id: int
    owner: str
    name: str | None
    prefix: str = Field(description="the key's first 8 characters, to recognise it")
    admin: bool
    created_at: datetime
    last_used_at: datetime | None = Field(description="to the minute")
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="the key itself: shown only in this response, store it now")


class ApiKeysPublic(BaseModel):
    data: list[ApiKeyPublic]
    count: int
