"""The search request: what to search over, on which data, with which budget.

One pydantic model serves the CLI (flags or a JSON/YAML spec file), the API body
and the stored ``actsearch_searches.spec`` column, so the three never drift.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import InvalidInput
from models.catalogue import family_info  # no torch: the families' declarations only
from models.spec import IMAGE_KINDS, SEQUENCE_KINDS, ArchSpec

#: The round-one default (eight families); the default is now every registered family
#: that fits the architecture (:func:`default_families`), raced (``allocation: race``).
DEFAULT_FAMILIES = ["relu", "leaky_relu", "elu", "gelu", "silu", "prelu", "rational", "vaf"]
ALLOCATIONS = ("race", "equal")
SAMPLERS = ("tpe", "random", "qmc", "cmaes", "gp", "nsga2")
PRUNERS = ("median", "hyperband", "successive_halving", "percentile", "none")
SECONDARY_OBJECTIVES = ("params", "flops")
#: Largest integer a database column holds (ids, versions); beyond it SQLite overflows.
MAX_ID = 2**63 - 1
#: Bounds that keep one spec from asking for absurd work, whatever the service's limits.
MAX_BATCH_SIZE = 2**20
MAX_POPULATION_SIZE = 1024
MAX_FINALIST_SEEDS = 100
MAX_SEED = 2**32 - 1
MAX_ARCH_CHARS = 1000


_WIDTH = re.compile(r"[+-]?[0-9]+")  # a sign is left to ArchSpec's "positive integer"
_DECIMAL = re.compile(r"[0-9]*\.[0-9]+")  # an option's fraction (dropout=0.1)
_OPTION = re.compile(r"[a-z_]+")


def _ascii_widths(text: str) -> None:
    """Widths in ASCII digits only: Python's int() also reads "６４", "٨" and "6_4", which
    no one means as a layer width (and which would be stored and shown unlike what runs)."""
    _, _, rest = text.partition(":")
    for part in re.split(r"[,/]", rest):
        part = part.strip()
        if "=" in part:  # transformer:d=64,dropout=0.1,param_match=false
            key, _, part = part.partition("=")
            if not _OPTION.fullmatch(key.strip()):
                raise ValueError(f"option {key.strip()!r} is not a plain name (in {text[:60]!r})")
            part = part.strip()
            if _DECIMAL.fullmatch(part) or part.lower() in ("true", "false"):
                continue
        if part and not _WIDTH.fullmatch(part):
            raise ValueError(f"width {part!r} is not a whole number written in ASCII digits "
                             f"0-9 (in {text[:60]!r}); write widths like 'mlp:64,64'")


class ArchitectureObject(BaseModel):
    """The object form of ``architecture`` (types only; :class:`ArchSpec` checks the rest)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["mlp", "cnn", "transformer", "resnet"] = "mlp"
    hidden: list[int] | None = Field(default=None, max_length=1024)
    dropout: float | None = None
    norm: str | None = None
    residual: bool | None = None
    conv_channels: list[int] | None = Field(default=None, max_length=1024)
    kernel: int | None = None
    pool: int | None = None
    input_shape: list[int] | None = Field(default=None, max_length=8)
    activation_scope: str | None = None
    d_model: int | None = None
    n_layers: int | None = None
    heads: int | None = None
    mlp_ratio: float | None = None
    param_match: bool | None = None
    vocab_size: int | None = None
    blocks: int | None = None


class DataInputs(BaseModel):
    """What the dataset says about its rows, filled in when a search is created."""

    model_config = ConfigDict(extra="forbid")

    modality: Literal["tabular", "image", "tokens"] = "tabular"
    input_shape: list[int] | None = Field(default=None, max_length=8)
    vocab_size: int | None = Field(default=None, ge=1)


class ModuleArchitecture(BaseModel):
    """The user's own ``nn.Module`` (``actsearch.search_module``): a marker, never code.

    ``name`` is the module's class name and ``slots`` the unit width of each ``act()``
    slot, so the dashboard and ``actsearch show`` can display the search and families
    whose parameters must divide a width are offered only choices that do. The module
    itself stays in the user's Python process: only that process can train it.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["module"]
    name: str = Field(min_length=1, max_length=200)
    slots: list[int] = Field(min_length=1, max_length=1024)
    input_shape: list[int] | None = Field(default=None, max_length=8)

    @field_validator("slots")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(w < 1 for w in value):
            raise ValueError(f"slot widths must be positive, got {value}")
        return value


#: Candidates of a user-module population when the spec does not say (no engine sizing:
#: the module's cost is unknown until it is built).
MODULE_POPULATION_SIZE = 8


class SearchSpec(BaseModel):
    """Everything a search needs. Defaults give a sensible search on a small tabular set."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dataset: str = Field(min_length=1, max_length=4096,
                         description="built-in name (digits, ...), a file path, or a stored dataset name")
    dataset_version: int | None = Field(default=None, ge=1, le=MAX_ID)
    label: str | None = Field(default=None, max_length=1000, description="label column (CSV/Parquet) or y array name (NPZ)")
    task: Literal["classification", "regression"] | None = None
    architecture: str | dict[str, Any] = Field(
        default="mlp:64,64", description="'mlp:64,64', 'cnn:16,32/64', 'resnet:16,32,64', "
        "'transformer:d=64,layers=2,heads=4', or an object {kind, hidden, dropout, norm, "
        "residual, conv_channels, kernel, pool, input_shape, activation_scope, d_model, "
        "n_layers, heads, mlp_ratio, param_match, blocks}")
    families: list[str] = Field(
        default_factory=list, description="families to search; empty or omitted: every "
        "registered family that fits the architecture (relu is always added as the baseline)")
    trials: int = Field(default=32, ge=1, description="the compute budget: what `trials` "
                        "candidates at `epochs` each cost (equal allocation: split evenly "
                        "across families; race: spent in rungs, see `allocation`)")
    allocation: Literal["race", "equal"] = Field(
        default="race", description="race: successive halving with families as arms (every "
        "family few trials at few epochs, the best third go on to more trials and epochs, "
        "relu always); equal: every family the same trials at full epochs")
    time_budget_s: float | None = Field(default=None, gt=0)
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=64, ge=1, le=MAX_BATCH_SIZE)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    lr: tuple[float, float] = (1e-4, 3e-2)
    weight_decay: tuple[float, float] = (1e-6, 1e-2)
    sampler: str = "tpe"
    pruner: str = "median"
    population_size: int | None = Field(default=None, ge=1, le=MAX_POPULATION_SIZE,
                                        description="K; None picks it")
    finalist_seeds: int = Field(default=3, ge=1, le=MAX_FINALIST_SEEDS)
    objective: Literal["metric", "metric+params", "metric+flops"] = "metric"
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    val_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    warm_start_from: int | None = Field(
        default=None, ge=1, le=MAX_ID,
        description="id of an earlier search with the same families, architecture and "
                    "objective: its finished trials (complete and pruned) seed this search's "
                    "sampler; this search's own trial budget is unchanged")
    control: Literal["relu"] | None = Field(
        default=None,
        description="'relu' also runs a ReLU-only search with the same total compute "
                    "(candidate-epochs, search and finalists) once the leaderboard is decided, "
                    "and reports the final choice's test metric against it with a verdict; "
                    "the search takes about twice as long")

    inputs: DataInputs | None = Field(
        default=None, description="filled in from the dataset when the search is created "
        "(modality, input_shape, vocab_size); image and sequence architectures take their "
        "input shape and vocabulary from it")

    @field_validator("families")
    @classmethod
    def _known_families(cls, value: list[str]) -> list[str]:
        if not value:
            return []  # every family that fits: filled in once the architecture is known
        names = [family_info(v).name for v in value]  # raises UnknownActivation
        if len(set(names)) != len(names):
            raise ValueError(f"families listed twice: {sorted({n for n in names if names.count(n) > 1})}")
        if "relu" not in names:
            names.insert(0, "relu")  # the baseline is always tuned alongside (evaluation protocol)
        return names

    @field_validator("control", mode="before")
    @classmethod
    def _known_control(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower() or None
            if value not in (None, "relu"):
                raise ValueError(f"unknown control {value!r}; the control arm is 'relu' "
                                 "(a ReLU-only search with the same compute), or leave it out")
        return value

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        if value not in SAMPLERS:
            raise ValueError(f"unknown sampler {value!r}; choose from {', '.join(SAMPLERS)}")
        return value

    @field_validator("pruner")
    @classmethod
    def _known_pruner(cls, value: str) -> str:
        if value not in PRUNERS:
            raise ValueError(f"unknown pruner {value!r}; choose from {', '.join(PRUNERS)}")
        return value

    @field_validator("lr", "weight_decay")
    @classmethod
    def _range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 < low <= high:
            raise ValueError(f"range must satisfy 0 < low <= high, got {list(value)}")
        return value

    @field_validator("architecture")
    @classmethod
    def _arch_types(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(value, dict) and value.get("kind") == "module":
            ModuleArchitecture.model_validate(value)
        elif isinstance(value, dict):
            # Wrong types ({"hidden": 8}) get pydantic's messages, not a TypeError deep inside.
            ArchitectureObject.model_validate(value)
        elif len(value) > MAX_ARCH_CHARS:
            raise ValueError(f"a string architecture has at most {MAX_ARCH_CHARS} characters "
                             f"('mlp:64,64'), got {len(value)}")
        else:
            _ascii_widths(value)
        return value

    @model_validator(mode="after")
    def _arch(self) -> SearchSpec:
        if not self.families:
            given = "families" in self.model_fields_set
            self.families = default_families(self.activation_widths(), module=self.is_module)
            if not given:  # still "not given": a schedule's template keeps taking every family
                self.model_fields_set.discard("families")
        if self.is_module:
            if self.control is not None:
                raise InvalidInput(
                    "control: the equal-compute ReLU control runs for built-in architectures "
                    "only (actsearch.search, the CLI, the API), not for search_module yet; "
                    "leave control out, or search a built-in architecture")
            self._check_widths(self.activation_widths())
            if self.population_size is None:
                self.population_size = min(MODULE_POPULATION_SIZE, self.trials_per_family())
            return self
        arch = self.arch_spec()  # raises InvalidInput on a malformed architecture
        if arch.kind == "cnn" and arch.input_shape is not None:
            # With "same" padding a wider kernel only ever covers padding (and costs k^2).
            most = 2 * max(arch.input_shape[1:]) + 1
            if arch.kernel > most:
                raise InvalidInput(
                    f"kernel {arch.kernel} is larger than the input ({arch.input_shape[1]}x"
                    f"{arch.input_shape[2]}) can use; use a kernel of at most {most}"
                )
        self._check_widths(self.activation_widths())
        return self

    def _check_widths(self, widths: list[int]) -> None:
        for family in self.families:
            for param in family_info(family).space():
                if param.divides_width and widths and not param.choices_for(widths):
                    raise InvalidInput(
                        f"families: {family} needs a {param.name} that divides every layer "
                        f"width, and none of {', '.join(map(str, param.choices or ()))} divides "
                        f"all of {', '.join(map(str, widths))}; use widths that are multiples "
                        f"of {min(param.choices or (2,))} or drop {family}"
                    )

    @property
    def multi_objective(self) -> bool:
        return self.objective != "metric"

    @property
    def is_module(self) -> bool:
        """A search of the user's own module (``actsearch.search_module``)."""
        return isinstance(self.architecture, dict) and self.architecture.get("kind") == "module"

    def module_arch(self) -> ModuleArchitecture:
        """The user-module marker (only for :attr:`is_module` specs)."""
        return ModuleArchitecture.model_validate(self.architecture)

    def arch_spec(self) -> ArchSpec:
        """The architecture as the models package's dataclass, completed from ``inputs``.

        Image kinds take ``input_shape`` and a transformer ``vocab_size`` from the dataset
        (``inputs``) unless the architecture gives them; before the dataset is known
        (``inputs`` None) those may be missing.
        """
        if self.is_module:
            raise InvalidInput(
                f"architecture: kind 'module' ({self.module_arch().name}) is the user's own "
                "nn.Module; only actsearch.search_module, in the user's Python process, can "
                "train it (the service never runs user code); give a built-in architecture "
                "such as 'mlp:64,64' or 'cnn:16,32/64'")
        if isinstance(self.architecture, str):
            arch = ArchSpec.parse(self.architecture)
        else:
            arch = ArchSpec.from_dict(self.architecture)
        if self.inputs is not None:
            check_modality(arch, self.inputs)
            if arch.kind in IMAGE_KINDS and arch.input_shape is None and self.inputs.input_shape:
                arch.input_shape = tuple(self.inputs.input_shape)
            if arch.kind in SEQUENCE_KINDS and arch.vocab_size is None:
                arch.vocab_size = self.inputs.vocab_size
        arch.validate(require_data=self.inputs is not None)
        return arch

    def with_inputs(self, *, modality: str, input_shape: Any, vocab_size: int | None) -> SearchSpec:
        """This spec with the dataset's ``inputs``; raises InvalidInput where they do not fit."""
        inputs = DataInputs(modality=modality,  # type: ignore[arg-type]
                            input_shape=list(input_shape) if input_shape else None,
                            vocab_size=vocab_size)
        done = self.model_copy(update={"inputs": inputs})
        done.arch_spec()  # raises InvalidInput naming what does not fit
        return done

    def activation_widths(self) -> list[int]:
        """The widths of the layers the searched activations are applied to."""
        if self.is_module:
            return list(self.module_arch().slots)
        return self.arch_spec().activation_widths()

    @property
    def racing(self) -> bool:
        """Whether the search races its families (more than one rung; :mod:`search.race`)."""
        from .race import races

        return not self.is_module and races(self.families, self.allocation)

    def planned_trials(self) -> int:
        """The search phase's trials in all (a race plans more, cheaper ones)."""
        from .race import planned_trials

        if self.is_module:
            return self.trials_per_family() * len(self.families)
        return planned_trials(len(self.families), self.trials, self.epochs, self.allocation)

    def trials_per_family(self) -> int:
        """Equal tuning budget per family: the ReLU baseline gets as many trials as any other."""
        return max(1, -(-self.trials // len(self.families)))


def check_modality(arch: ArchSpec, inputs: DataInputs) -> None:
    """Refuse an architecture that cannot read the dataset's rows (clear 422s)."""
    if arch.kind in SEQUENCE_KINDS and inputs.modality != "tokens":
        raise InvalidInput(
            f"architecture: a {arch.kind} reads token sequences, but the dataset is "
            f"{inputs.modality}; use token data (an NPZ with integer X (N, T) and vocab_size, "
            "or modular_sum / max_position) or an mlp/cnn/resnet"
        )
    if inputs.modality == "tokens" and arch.kind not in SEQUENCE_KINDS:
        raise InvalidInput(
            f"architecture: the dataset holds token ids, which a {arch.kind} would read as "
            "magnitudes; use a transformer, e.g. 'transformer:d=64,layers=2,heads=4'"
        )
    if arch.kind in IMAGE_KINDS and arch.input_shape is None and (
            inputs.input_shape is None or len(inputs.input_shape) != 3):
        raise InvalidInput(
            f"architecture: a {arch.kind} needs input_shape (C, H, W) from image data, and "
            f"this {inputs.modality} dataset has none; use an image set (an NPZ with X of "
            "shape (N, C, H, W), digits_images) or give input_shape"
        )


def parse_spec(data: dict[str, Any]) -> SearchSpec:
    """Validate a dict into a spec, turning pydantic's errors into one readable InvalidInput."""
    try:
        return SearchSpec.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "spec"
            parts.append(f"{where}: {err['msg']}")
        raise InvalidInput("invalid search spec: " + "; ".join(parts)) from None


def load_spec_file(path: Path) -> dict[str, Any]:
    """Read a JSON or YAML spec file (YAML is a superset of JSON)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read spec file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"spec file {path} is not valid JSON/YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"spec file {path} must hold a mapping of options, not {type(data).__name__}")
    return data


def default_families(widths: list[int], *, module: bool = False) -> list[str]:
    """Every registered family a search of these activation widths can use (relu first).

    Families added later are searched by default too. Left out: those whose required
    divisor fits no width (groupsort's group), and for a user's module the families that
    change a layer's width (the module's layers are the user's).
    """
    from models.catalogue import family_names

    names = ["relu", *sorted(n for n in family_names() if n != "relu")]
    chosen = []
    for name in names:
        cls = family_info(name)
        if any(p.divides_width and widths and not p.choices_for(widths) for p in cls.space()):
            continue
        if module and not _preserves_width(name, widths):
            continue
        chosen.append(cls.name)
    return list(dict.fromkeys(chosen))


def _preserves_width(family: str, widths: list[int]) -> bool:
    from models.activations import get_activation  # torch: a user's module search has it
    from models.network import layer_widths

    cls = get_activation(family)
    return all(layer_widths(cls, {}, w, param_match=False) == (w, w) for w in widths or [8])
