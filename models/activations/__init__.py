"""The activation-family registry: ``get_activation(name)`` and ``families()``."""

from __future__ import annotations

from . import fixed, trainable  # noqa: F401  (importing registers the families)
from .base import (
    BASE_FUNCTIONS,
    REGISTRY,
    SHARING,
    Activation,
    ParamSpec,
    families,
    get_activation,
    register,
)

__all__ = [
    "BASE_FUNCTIONS",
    "REGISTRY",
    "SHARING",
    "Activation",
    "ParamSpec",
    "families",
    "get_activation",
    "register",
]
