"""The activation-family registry: ``get_activation(name)`` and ``families()``.

Importing this package registers every family: fixed ones first (they also register
the base functions the affine, rational and vaf families build on), then trainable.
"""

from __future__ import annotations

from . import fixed, gated, modern, rational, spline, trainable, vaf  # noqa: F401  (importing registers them)
from .base import (
    ALIASES,
    BASE_FUNCTIONS,
    REGISTRY,
    SHARING,
    Activation,
    ParamSpec,
    families,
    get_activation,
    is_trainable,
    register,
    register_base,
)

__all__ = [
    "ALIASES",
    "BASE_FUNCTIONS",
    "REGISTRY",
    "SHARING",
    "Activation",
    "ParamSpec",
    "families",
    "get_activation",
    "is_trainable",
    "register",
    "register_base",
]
