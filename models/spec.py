"""What to train: the architecture, the training loop settings, and one candidate.

These dataclasses are the contract between ``search/`` (which builds them from a
user's request and Optuna's suggestions) and the population engine. They are
plain data: JSON round-trips through :meth:`to_dict` / :meth:`from_dict`, and
:meth:`validate` says what is wrong and how to fix it, raising
:class:`~core.errors.InvalidInput`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from core.errors import InvalidInput

Kind = Literal["mlp", "cnn", "transformer", "resnet"]
Norm = Literal["none", "batch", "layer"]
Scope = Literal["net", "layer"]
OptimizerName = Literal["adam", "adamw", "sgd"]
ScheduleName = Literal["constant", "cosine", "step"]

KINDS = ("mlp", "cnn", "transformer", "resnet")
#: Kinds that take images (each row reshaped to ``input_shape``) or token sequences.
IMAGE_KINDS = ("cnn", "resnet")
SEQUENCE_KINDS = ("transformer",)
#: Short-form keys of ``transformer:d=64,layers=2,heads=4`` and the fields they set.
_TRANSFORMER_KEYS = {"d": "d_model", "layers": "n_layers", "heads": "heads", "ratio": "mlp_ratio",
                     "dropout": "dropout", "param_match": "param_match", "vocab": "vocab_size"}
NORMS = ("none", "batch", "layer")
SCOPES = ("net", "layer")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")


def _known_keys(cls: type, d: dict[str, Any], what: str) -> None:
    if not isinstance(d, dict):
        raise InvalidInput(f"{what} must be a JSON object, not {type(d).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise InvalidInput(f"{what}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")


def _int_list(text: str, what: str) -> list[int]:
    text = text.strip()
    if not text:
        return []
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            out.append(int(part))
        except ValueError:
            raise InvalidInput(
                f"{what}: {part!r} is not a whole number; write widths like '64,64'"
            ) from None
    return out


def _key_values(text: str, whole: str) -> dict[str, Any]:
    """``"d=64,layers=2"`` -> ``{"d": 64, "layers": 2}`` for the transformer short form."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not eq or key not in _TRANSFORMER_KEYS:
            raise InvalidInput(
                f"{whole!r}: cannot read {part!r}; write key=value pairs with keys "
                f"{', '.join(_TRANSFORMER_KEYS)}, e.g. 'transformer:d=64,layers=2,heads=4'"
            )
        value = value.strip()
        try:
            if key in ("ratio", "dropout"):
                out[key] = float(value)
            elif key == "param_match":
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1", "yes")
            else:
                out[key] = int(value)
        except ValueError:
            raise InvalidInput(f"{whole!r}: {key}={value!r} is not a valid value") from None
    return out


@dataclass
class ArchSpec:
    """The network shape shared by every candidate of a population.

    Attributes:
        kind: ``"mlp"`` or ``"cnn"``.
        hidden: MLP hidden widths (for cnn: the widths of the MLP head, may be empty).
        dropout: dropout probability after each MLP/head hidden activation (0 = off).
            SELU-like families (``dropout_kind == "alpha"``) get AlphaDropout.
        norm: ``"none"``, ``"batch"`` or ``"layer"`` normalisation before each activation,
            with affine parameters of its own per candidate.
        residual: skip connections between hidden layers of equal width.
        conv_channels: cnn only: output channels of each conv layer.
        kernel: cnn only: square kernel size ("same" padding, stride 1).
        pool: cnn only: max-pool size after each conv (1 = none).
        input_shape: cnn only: ``(C, H, W)``; each input row is reshaped to it.
        activation_scope: ``"net"`` (one family and parameter set for all layers) or
            ``"layer"`` (a family and parameter set per hidden layer).
        d_model, n_layers, heads, mlp_ratio: transformer only: embedding width, blocks,
            attention heads (dividing ``d_model``) and the MLP's hidden width ratio.
        param_match: gated families (swiglu, ...) split their projection into value and
            gate halves; with ``param_match`` their hidden width is scaled by 2/3 so the
            network has the parameters of the ungated one (a transformer's 4 becomes 8/3).
        vocab_size: transformer only: token ids are ``0..vocab_size-1`` (from the dataset).
        blocks: resnet only: residual blocks per stage (``conv_channels`` are the stages).
    """

    kind: Kind = "mlp"
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    dropout: float = 0.0
    norm: Norm = "none"
    residual: bool = False
    conv_channels: list[int] = field(default_factory=list)
    kernel: int = 3
    pool: int = 2
    input_shape: tuple[int, ...] | None = None
    activation_scope: Scope = "net"
    d_model: int = 64
    n_layers: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    param_match: bool = True
    vocab_size: int | None = None
    blocks: int = 1

    @classmethod
    def parse(cls, text: str, **overrides: Any) -> ArchSpec:
        """Parse the short form: ``"mlp:64,64"``, ``"cnn:16,32/64"`` (channels/head),
        ``"resnet:16,32,64"`` (stage widths, optionally ``/head``) or
        ``"transformer:d=64,layers=2,heads=4"`` (also ``ratio=``, ``dropout=``,
        ``param_match=false``).

        ``"cnn:16,32"`` is a cnn with no head hidden layers. Keyword ``overrides``
        set the other fields (``dropout=0.1``, ``input_shape=(1, 8, 8)``, ...).
        """
        if not isinstance(text, str) or ":" not in text:
            raise InvalidInput(
                f"cannot parse architecture {text!r}; write 'mlp:64,64', 'cnn:16,32/64' "
                "(conv channels / head widths), 'resnet:16,32' or 'transformer:d=64,layers=2,heads=4'"
            )
        kind, _, rest = text.partition(":")
        kind = kind.strip().lower()
        if kind == "mlp":
            if "/" in rest:
                raise InvalidInput(f"{text!r}: an mlp has no conv channels; write 'mlp:64,64'")
            spec = cls(kind="mlp", hidden=_int_list(rest, "mlp hidden widths"))
        elif kind == "cnn":
            channels, _, head = rest.partition("/")
            spec = cls(
                kind="cnn",
                conv_channels=_int_list(channels, "cnn channels"),
                hidden=_int_list(head, "cnn head widths"),
            )
        elif kind == "resnet":
            channels, _, head = rest.partition("/")
            spec = cls(kind="resnet", conv_channels=_int_list(channels, "resnet stage widths"),
                       hidden=_int_list(head, "resnet head widths"))
        elif kind == "transformer":
            spec = cls(kind="transformer", hidden=[])
            for key, value in _key_values(rest, text).items():
                setattr(spec, _TRANSFORMER_KEYS[key], value)
        else:
            raise InvalidInput(f"unknown architecture kind {kind!r} in {text!r}; use one of {KINDS}")
        for key, value in overrides.items():
            if key not in {f.name for f in fields(cls)}:
                raise InvalidInput(f"unknown architecture option {key!r}")
            setattr(spec, key, value)
        if spec.input_shape is not None:
            spec.input_shape = tuple(int(v) for v in spec.input_shape)
        return spec

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchSpec:
        """Inverse of :meth:`to_dict`; unknown keys are an error (typos should not pass)."""
        _known_keys(cls, d, "architecture")
        kw = dict(d)
        if kw.get("kind") in ("transformer", "resnet") and "hidden" not in kw:
            kw["hidden"] = []  # no head layers unless asked (the mlp default is [64, 64])
        if kw.get("input_shape") is not None:
            kw["input_shape"] = tuple(int(v) for v in kw["input_shape"])
        for key in ("hidden", "conv_channels"):
            if key in kw:
                kw[key] = list(kw[key])
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        d = asdict(self)
        d["input_shape"] = list(self.input_shape) if self.input_shape is not None else None
        return d

    def n_hidden_layers(self) -> int:
        """Layers followed by an activation: conv layers then hidden (head) layers."""
        if self.kind == "transformer":
            return int(self.n_layers)  # one activation per block, in its MLP
        if self.kind == "resnet":  # the stem, two per residual block, then the head
            return 1 + 2 * int(self.blocks) * len(self.conv_channels) + len(self.hidden)
        return (len(self.conv_channels) if self.kind == "cnn" else 0) + len(self.hidden)

    def mlp_width(self) -> int:
        """Transformer: the ungated MLP hidden width ``round(mlp_ratio * d_model)``."""
        return max(1, round(float(self.mlp_ratio) * int(self.d_model)))

    def activation_widths(self) -> list[int]:
        """Widths of the layers the activations are applied to (before any gated 2/3)."""
        if self.kind == "transformer":
            return [self.mlp_width()]
        if self.kind == "resnet":
            return [*self.conv_channels, *self.hidden]
        return [*(self.conv_channels if self.kind == "cnn" else []), *self.hidden]

    def short(self) -> str:
        """The short form of this architecture (for names and tables)."""
        if self.kind == "transformer":
            return f"transformer:d={self.d_model},layers={self.n_layers},heads={self.heads}"
        widths = ",".join(map(str, self.hidden))
        if self.kind == "mlp":
            return f"mlp:{widths}"
        channels = ",".join(map(str, self.conv_channels))
        return f"{self.kind}:{channels}" + (f"/{widths}" if widths else "")

    def validate(
        self,
        *,
        n_inputs: int | None = None,
        max_width: int | None = None,
        max_layers: int | None = None,
        require_data: bool = True,
    ) -> ArchSpec:
        """Check the spec; raise :class:`InvalidInput` saying what to change. Returns self.

        Args:
            n_inputs: features per row, when known (a cnn's ``input_shape`` must match).
            require_data: the fields that come from the dataset (``input_shape`` of image
                kinds, ``vocab_size`` of a transformer) must be set; ``False`` while a
                search spec is parsed, before its dataset is known.
            max_width: optional limit on any width / channel count.
            max_layers: optional limit on the number of hidden (conv + dense) layers.
        """
        if self.kind not in KINDS:
            raise InvalidInput(f"architecture kind must be one of {KINDS}, not {self.kind!r}")
        if self.norm not in NORMS:
            raise InvalidInput(f"unknown norm {self.norm!r}; use one of {NORMS}")
        if self.activation_scope not in SCOPES:
            raise InvalidInput(
                f"unknown activation_scope {self.activation_scope!r}; use 'net' (one activation "
                "for the whole network) or 'layer' (one per hidden layer)"
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not (
            0.0 <= float(self.dropout) < 1.0
        ):
            raise InvalidInput(f"dropout must be in [0, 1), got {self.dropout!r}; 0 turns it off")
        widths = [("hidden", w) for w in self.hidden]
        if self.kind == "transformer":
            widths += self._validate_transformer(n_inputs, require_data)
        elif self.kind == "resnet":
            widths += self._validate_resnet(n_inputs, require_data)
        elif self.kind == "mlp":
            if not self.hidden:
                raise InvalidInput("an mlp needs at least one hidden layer, e.g. 'mlp:64,64'")
            if self.conv_channels:
                raise InvalidInput("conv_channels is for kind 'cnn'; an mlp takes only hidden widths")
        else:
            if not self.conv_channels:
                raise InvalidInput("a cnn needs at least one conv layer, e.g. 'cnn:16,32/64'")
            widths += [("conv_channels", c) for c in self.conv_channels]
            if self.input_shape is None and require_data:
                raise InvalidInput(
                    "a cnn needs input_shape (C, H, W), e.g. [1, 8, 8] for 8x8 grey images; "
                    "each row of the dataset is reshaped to it"
                )
            if not isinstance(self.kernel, int) or self.kernel < 1:
                raise InvalidInput(f"kernel must be a positive integer, got {self.kernel!r}")
            if not isinstance(self.pool, int) or self.pool < 1:
                raise InvalidInput(f"pool must be a positive integer (1 = no pooling), got {self.pool!r}")
            if self.input_shape is not None:
                shape = self._check_image_shape(n_inputs)
                h, w = shape[1], shape[2]
                for i in range(len(self.conv_channels)):
                    h, w = h // self.pool, w // self.pool
                    if h < 1 or w < 1:
                        raise InvalidInput(
                            f"input {shape[1]}x{shape[2]} shrinks to nothing after conv layer "
                            f"{i + 1} with pool={self.pool}; use fewer conv layers or pool=1"
                        )
        for what, v in widths:
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise InvalidInput(f"every {what} width must be a positive integer, got {v!r}")
            if max_width is not None and v > max_width:
                raise InvalidInput(f"{what} width {v} is above the limit {max_width}; use a smaller one")
        if max_layers is not None and self.n_hidden_layers() > max_layers:
            raise InvalidInput(
                f"{self.n_hidden_layers()} hidden layers is above the limit {max_layers}"
            )
        if n_inputs is not None and n_inputs <= 0:
            raise InvalidInput(f"the data has {n_inputs} features; it needs at least one")
        return self


    def _check_image_shape(self, n_inputs: int | None) -> tuple[int, ...]:
        shape = tuple(self.input_shape or ())
        if len(shape) != 3 or any(not isinstance(v, int) or v <= 0 for v in shape):
            raise InvalidInput(f"input_shape must be three positive integers (C, H, W), got {shape}")
        if n_inputs is not None and math.prod(shape) != n_inputs:
            raise InvalidInput(
                f"input_shape {shape} holds {math.prod(shape)} values but rows have "
                f"{n_inputs} features"
            )
        return shape

    def _validate_transformer(self, n_inputs: int | None,
                              require_data: bool) -> list[tuple[str, Any]]:
        for name in ("d_model", "n_layers", "heads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidInput(f"transformer {name} must be a positive integer, got {v!r}")
        if self.d_model % self.heads:
            raise InvalidInput(
                f"transformer heads={self.heads} must divide d={self.d_model} (each head gets "
                "d/heads dimensions)"
            )
        ratio = self.mlp_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 64:
            raise InvalidInput(f"transformer ratio must be a number in (0, 64], got {ratio!r}")
        if not isinstance(self.param_match, bool):
            raise InvalidInput(f"param_match must be true or false, got {self.param_match!r}")
        if self.conv_channels:
            raise InvalidInput("conv_channels is for kinds 'cnn' and 'resnet', not a transformer")
        if self.hidden:
            raise InvalidInput("a transformer has no hidden head layers; its MLP width is "
                               "ratio x d (ratio=4 by default)")
        if self.vocab_size is None:
            if require_data:
                raise InvalidInput(
                    "a transformer needs vocab_size (token ids 0..vocab_size-1): it comes from a "
                    "token dataset (an NPZ with integer X (N, T) and vocab_size, or a built-in "
                    "sequence task such as modular_sum)"
                )
        elif isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int) or \
                self.vocab_size < 1:
            raise InvalidInput(f"vocab_size must be a positive integer, got {self.vocab_size!r}")
        return [("d_model", self.d_model), ("mlp", self.mlp_width())]

    def _validate_resnet(self, n_inputs: int | None, require_data: bool) -> list[tuple[str, Any]]:
        if not self.conv_channels:
            raise InvalidInput("a resnet needs at least one stage width, e.g. 'resnet:16,32,64'")
        if isinstance(self.blocks, bool) or not isinstance(self.blocks, int) or self.blocks < 1:
            raise InvalidInput(f"resnet blocks (per stage) must be a positive integer, got {self.blocks!r}")
        if not isinstance(self.param_match, bool):
            raise InvalidInput(f"param_match must be true or false, got {self.param_match!r}")
        if self.input_shape is None:
            if require_data:
                raise InvalidInput(
                    "a resnet needs input_shape (C, H, W) from image data: an NPZ with X of "
                    "shape (N, C, H, W), or a built-in image set such as digits_images"
                )
        else:
            self._check_image_shape(n_inputs)
        return [("conv_channels", c) for c in self.conv_channels]


@dataclass
class TrainConfig:
    """How a population is trained (shared by its K candidates).

    Attributes:
        epochs: passes over the training rows.
        batch_size: rows per step (the last, smaller batch is kept).
        optimizer: ``"adam"`` (L2 folded into the gradient), ``"adamw"`` (decoupled
            decay) or ``"sgd"`` (with ``momentum``).
        schedule: learning-rate multiplier: ``"constant"``; ``"cosine"`` (per step,
            from 1 to 0 over all steps); ``"step"`` (x0.1 at 50% and again at 75% of epochs).
        data_seed: batch order, shared by the population (common random numbers).
        deadline_s: wall-time limit; past it the engine stops all candidates (status "deadline").
        record_epochs: how many times curves and pre-activation statistics are recorded:
            epoch 0, ``record_epochs - 2`` evenly spaced epochs between, and each
            candidate's last epoch (1 = only the last; 0 = never).
        curve_points: grid points of each sampled curve.
        stats_sample: validation rows used for statistics (a fixed subset from ``data_seed``).
        hist_bins: histogram bins of the pre-activation statistics.
        device: torch device string, e.g. ``"cpu"`` or ``"cuda:0"``.
        compile_horizon: how many populations of this work with these families the
            training process expects to train (>= 1); the compile decision counts the
            eager time saved over all of them (:func:`models.kernels.should_compile`).
    """

    epochs: int = 20
    batch_size: int = 64
    optimizer: OptimizerName = "adam"
    momentum: float = 0.9
    schedule: ScheduleName = "cosine"
    data_seed: int = 0
    deadline_s: float | None = None
    record_epochs: int = 4
    curve_points: int = 201
    stats_sample: int = 1024
    hist_bins: int = 64
    device: str = "cpu"
    compile_horizon: float = 1.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        _known_keys(cls, d, "training config")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> TrainConfig:
        """Check ranges; raise :class:`InvalidInput` saying what to change. Returns self."""

        def pos_int(name: str, minimum: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise InvalidInput(f"{name} must be an integer >= {minimum}, got {v!r}")

        pos_int("epochs", 1)
        pos_int("batch_size", 1)
        pos_int("record_epochs", 0)
        pos_int("curve_points", 2)
        pos_int("stats_sample", 1)
        pos_int("hist_bins", 1)
        if self.optimizer not in OPTIMIZERS:
            raise InvalidInput(f"unknown optimizer {self.optimizer!r}; use one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise InvalidInput(f"unknown schedule {self.schedule!r}; use one of {SCHEDULES}")
        if not (0.0 <= float(self.momentum) < 1.0):
            raise InvalidInput(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.deadline_s is not None and not (float(self.deadline_s) > 0):
            raise InvalidInput(f"deadline_s must be positive (or null for none), got {self.deadline_s!r}")
        if not isinstance(self.device, str) or not self.device:
            raise InvalidInput(f"device must be a string such as 'cpu' or 'cuda:0', got {self.device!r}")
        if not float(self.compile_horizon) >= 1.0:
            raise InvalidInput(f"compile_horizon must be >= 1, got {self.compile_horizon!r}")
        return self


@dataclass
class Candidate:
    """One trial inside a population.

    Attributes:
        seed: weight initialisation and dropout masks of this candidate.
        lr: its learning rate (before the schedule's multiplier).
        weight_decay: its weight decay (weights of linear/conv layers only).
        act_params: the family's parameters: a dict, or (``activation_scope="layer"``)
            a list of dicts, one per hidden layer.
        family: this candidate's activation family (or, with ``activation_scope="layer"``,
            one per hidden layer); ``None`` takes the population's family. Candidates of
            different families share a population when :func:`models.populations.population_key`
            says they have the same shape.
    """

    seed: int
    lr: float
    weight_decay: float = 0.0
    act_params: dict[str, Any] | list[dict[str, Any]] = field(default_factory=dict)
    family: str | list[str] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        _known_keys(cls, d, "candidate")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> Candidate:
        """Check ranges; raise :class:`InvalidInput` saying what to change. Returns self."""
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InvalidInput(f"seed must be a non-negative integer, got {self.seed!r}")
        if not (math.isfinite(float(self.lr)) and float(self.lr) >= 0):
            raise InvalidInput(f"lr must be a finite number >= 0, got {self.lr!r}")
        if not (math.isfinite(float(self.weight_decay)) and float(self.weight_decay) >= 0):
            raise InvalidInput(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.family is not None and not (
            isinstance(self.family, str)
            or (isinstance(self.family, list) and all(isinstance(f, str) for f in self.family))
        ):
            raise InvalidInput(
                f"family must be a family name (or a list of names, one per hidden layer), "
                f"got {self.family!r}"
            )
        if not isinstance(self.act_params, (dict, list)):
            raise InvalidInput(
                f"act_params must be a dict (or a list of dicts, one per layer), "
                f"got {type(self.act_params).__name__}"
            )
        return self
