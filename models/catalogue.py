"""The activation families' names and parameter spaces, readable without torch.

The search side needs, before anything trains, only what a family *declares*: its
name (and aliases), whether it is trainable, and its :class:`~models.params.ParamSpec`
space (spec validation, Optuna's asks, a population's structural values). The
families themselves are ``nn.Module`` classes (:mod:`models.activations`), and importing
them imports torch: about a second of CPU, which ``actsearch search``'s coordinator would
otherwise spend on the way to its first epoch while its training child imports torch
for real.

Where the answers come from, cheapest first:

1. the live registry, when this process has imported :mod:`models.activations` already;
2. a snapshot of it, ``models/__pycache__/catalogue-<fingerprint>.txt``, written by the
   last process that had to import the registry; the fingerprint hashes every source
   file of :mod:`models.activations` and :mod:`models.params`, so an edited family is
   never read from a stale snapshot (like a ``.pyc``; a read-only install skips writing);
3. otherwise the registry is imported (torch) and the snapshot written.

The snapshot is Python literals (``ast.literal_eval``, never executed or unpickled).
``tests/models/test_catalogue.py`` checks that every answer equals the registry's.
"""

from __future__ import annotations

import ast
import hashlib
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.errors import UnknownActivation

from .params import ParamSpec, resolve_params, structural_values

_PACKAGE = Path(__file__).resolve().parent
_SOURCES = (_PACKAGE / "params.py", *sorted((_PACKAGE / "activations").glob("*.py")))
_FORMAT = 1


@dataclass(frozen=True)
class FamilyInfo:
    """What a family declares (its class's ``name``, ``trainable`` and ``space()``)."""

    name: str
    trainable: bool
    params: tuple[ParamSpec, ...]

    def space(self) -> list[ParamSpec]:
        return list(self.params)

    def resolve_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """As :meth:`models.activations.Activation.resolve_params`."""
        return resolve_params(self.name, self.params, params)

    def structural_values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """As :meth:`models.activations.Activation.structural_values`."""
        return structural_values(self.name, self.params, params)


@dataclass(frozen=True)
class _Catalogue:
    families: dict[str, FamilyInfo]  # registration order
    aliases: dict[str, str]


_loaded: _Catalogue | None = None
_live: tuple[int, _Catalogue] | None = None  # (registry size, catalogue) built from the registry


def fingerprint() -> str:
    """A hash of the sources the families' declarations come from."""
    h = hashlib.sha1(f"{_FORMAT}".encode())
    for path in _SOURCES:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def snapshot_path() -> Path:
    return _PACKAGE / "__pycache__" / f"catalogue-{fingerprint()}.txt"


def _from_registry() -> _Catalogue:
    global _live
    from . import activations as registry

    if _live is None or _live[0] != len(registry.REGISTRY):
        _live = (len(registry.REGISTRY), _Catalogue(
            {cls.name: FamilyInfo(cls.name, bool(cls.trainable), tuple(cls.space()))
             for cls in registry.families()}, dict(registry.ALIASES)))
    return _live[1]


def _encode(cat: _Catalogue) -> str:
    return repr({"format": _FORMAT, "aliases": cat.aliases,
                 "families": [{"name": f.name, "trainable": f.trainable,
                               "params": [asdict(p) for p in f.params]}
                              for f in cat.families.values()]})


def _decode(text: str) -> _Catalogue:
    data = ast.literal_eval(text)
    if data.get("format") != _FORMAT:
        raise ValueError("snapshot format")
    families = {}
    for f in data["families"]:
        params = tuple(ParamSpec(**{**p, "choices": None if p["choices"] is None
                                    else tuple(p["choices"])}) for p in f["params"])
        families[f["name"]] = FamilyInfo(f["name"], bool(f["trainable"]), params)
    return _Catalogue(families, dict(data["aliases"]))


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # a read-only install: the next process imports the registry again
        pass


def _catalogue() -> _Catalogue:
    global _loaded
    if "models.activations.base" in sys.modules:  # the registry is here: it is the truth
        return _from_registry()
    if _loaded is not None:
        return _loaded
    path = snapshot_path()
    try:
        _loaded = _decode(path.read_text(encoding="utf-8"))
        return _loaded
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        pass
    cat = _from_registry()
    _write(path, _encode(cat))
    return cat


def family_info(name: str) -> FamilyInfo:
    """The family ``name`` (aliases allowed, as :func:`models.activations.get_activation`),
    or :class:`~core.errors.UnknownActivation`."""
    cat = _catalogue()
    key = name.lower().replace("-", "_")
    key = cat.aliases.get(key, key)
    key = cat.aliases.get(key, key)
    try:
        return cat.families[key]
    except KeyError:
        raise UnknownActivation(
            f"unknown activation {name!r}; choose from: {', '.join(sorted(cat.families))}"
        ) from None


def is_trainable(name: str) -> bool:
    """Whether the family learns parameters with the weights; UnknownActivation if no such family."""
    return family_info(name).trainable


def family_names() -> list[str]:
    """Every family, in registration order."""
    return list(_catalogue().families)


def write_snapshot() -> Path:
    """Write the snapshot from the registry now (imports torch); returns its path."""
    path = snapshot_path()
    _write(path, _encode(_from_registry()))
    return path


__all__ = ["FamilyInfo", "family_info", "family_names", "fingerprint", "is_trainable",
           "snapshot_path", "write_snapshot"]
