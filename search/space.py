"""The search space: what Optuna samples for one candidate of one family.

Family parameters are named ``"<family>.<param>"`` so each family's conditional
space stays apart in Optuna's storage (and in optuna-dashboard), while readable
``{param: value}`` dicts go to actsearch's own tables.
"""

from __future__ import annotations

from typing import Any

import optuna

from models.catalogue import family_info  # no torch: the families' declarations only
from models.params import ParamSpec

from .spec import SearchSpec

FAMILY_KEY = "family"
#: A raced trial's fidelity (the epochs its rung trains), as a trial user attribute: a
#: trial is pruned only against trials of the same family *and* fidelity, since a shorter
#: learning-rate schedule looks better at the same epoch than a longer one.
FIDELITY_ATTR = "epochs"


def optuna_name(family: str, param: str) -> str:
    """The Optuna parameter name of one family parameter."""
    return f"{family}.{param}"


def suggest(trial: optuna.Trial, name: str, spec: ParamSpec,
            widths: list[int] | None = None) -> Any:
    """Ask Optuna for one value following a family's ParamSpec.

    ``widths``: the activation's layer widths; a categorical that must divide them
    is offered only the choices that do (fixed per search, so Optuna sees one
    distribution per parameter name).
    """
    if spec.kind == "categorical":
        choices = spec.choices_for(widths) if widths is not None else spec.choices
        return trial.suggest_categorical(name, list(choices or ()))
    if spec.kind == "int":
        step = int(spec.step or 1)
        return trial.suggest_int(name, int(spec.low), int(spec.high), step=step, log=spec.log)
    return trial.suggest_float(name, float(spec.low), float(spec.high), log=spec.log,
                               step=spec.step)


def suggest_candidate(
    trial: optuna.Trial, family: str, spec: SearchSpec
) -> tuple[dict[str, Any], dict[str, float]]:
    """Sample one candidate: the family's parameters and the training hyperparameters.

    Returns ``(act_params, hparams)`` with readable names. The family itself is
    suggested too (the sampler fixes it per population) so that Optuna records
    it and its importance can be measured.
    """
    chosen = trial.suggest_categorical(FAMILY_KEY, spec.families)
    if chosen != family:  # a sampler that ignores the fixed value would break the protocol
        raise RuntimeError(f"sampler proposed family {chosen!r} for a {family!r} population")
    cls = family_info(family)
    widths = spec.activation_widths()
    act_params = {p.name: suggest(trial, optuna_name(family, p.name), p, widths)
                  for p in cls.space()}
    hparams = {
        "lr": trial.suggest_float("lr", spec.lr[0], spec.lr[1], log=True),
        "weight_decay": trial.suggest_float(
            "weight_decay", spec.weight_decay[0], spec.weight_decay[1], log=True
        ),
    }
    return act_params, hparams


def structural_params(family: str, act_params: dict[str, Any]) -> dict[str, Any]:
    """The Optuna-named structural values of a sampled candidate (fixed for its population)."""
    values = family_info(family).structural_values(act_params)
    return {optuna_name(family, name): value for name, value in values.items()}


def default_params(family: str, spec: SearchSpec) -> dict[str, Any]:
    """The family's declared defaults, Optuna-named, where its search space holds them.

    What a race's first trial of each family trains (its authors' configuration): one
    trial per family at a screening rung says more about the family at its defaults than
    at one random draw of its parameters.
    """
    widths = spec.activation_widths()
    out: dict[str, Any] = {}
    for p in family_info(family).space():
        if p.kind == "categorical":
            choices = p.choices_for(widths) if widths else p.choices
            if p.default not in (choices or ()):
                continue
        elif p.low is not None and p.high is not None and not p.low <= p.default <= p.high:
            continue
        out[optuna_name(family, p.name)] = p.default
    return out
