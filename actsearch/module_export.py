"""Export of a ``search_module`` search's best model: the user's module, trained, as a zip.

The built-in export (:func:`search.export.export_search`) rebuilds the network from
its spec; a user's module can only be rebuilt by the user's ``build``, so this runs
in the user's process. The zip holds ``model.pt2`` (``torch.export``, inputs flat
``(batch, D)`` and standardised, reshaped inside), ``state_dict.pt`` (plain tensors,
``torch.load(..., weights_only=True)``) and ``meta.json`` (family, scaler, labels).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from core.errors import InvalidInput


def export_module(result: Any, *, activations: str = "learned") -> bytes:
    """The zip bytes of the final choice of a user-module search."""
    import torch
    from torch import nn

    from models.export import state_dict_bytes
    from search.export import _json_safe
    from store import repo

    if activations != "learned":
        raise InvalidInput(f"activations={activations!r}: a search of your own module exports "
                           "its learned activations only (activations='learned'); distillation "
                           "rebuilds built-in architectures")
    trial = result.best_trial()
    model = result.best_model()
    data = result._prepared()
    s, ds = data.splits, data.dataset
    with result._sessions() as session:
        state_dict, scaler, label_map = repo.load_weights(session, trial_id=trial.id)

    class Flat(nn.Module):
        def __init__(self, inner: nn.Module, shape: tuple[int, ...] | None) -> None:
            super().__init__()
            self.inner, self.shape = inner, shape

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.reshape(x.shape[0], *self.shape) if self.shape else x)

    program: bytes | None = None
    program_error = None
    try:
        example = torch.zeros(4, ds.n_features)
        batch = torch.export.Dim("batch", min=2)
        exported = torch.export.export(Flat(model, s.input_shape).eval(), (example,),
                                       dynamic_shapes={"x": {0: batch}})
        buf = io.BytesIO()
        torch.export.save(exported, buf)
        program = buf.getvalue()
    except Exception as exc:  # noqa: BLE001 - not every module exports; the weights still do
        program_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    spec = result.spec
    meta = _json_safe({
        "format": "actsearch-module-export/1", "search_id": result.search_id,
        "module": spec.module_arch().model_dump(), "trial_id": trial.id,
        "family": trial.family, "family_params": trial.family_params, "hparams": trial.hparams,
        "task": ds.task, "validation_metric": trial.value, "test_metric": trial.test_value,
        "n_features": ds.n_features, "input_shape": s.input_shape, "scaler": scaler,
        "target_scaler": s.target_scaler, "class_names": label_map, "activations": activations,
        "program": "model.pt2" if program else None, "program_error": program_error,
        "how_to_load": "build(act) with actsearch.load(search_id, build=build).best_model(); "
                       "or torch.export.load('model.pt2').module() on standardised flat rows",
    })
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        if program:
            archive.writestr("model.pt2", program)
        archive.writestr("state_dict.pt", state_dict_bytes(state_dict))
        archive.writestr("meta.json", json.dumps(meta, indent=2))
    return out.getvalue()
