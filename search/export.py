"""The best model of a search as one zip a user can deploy with torch and numpy alone.

The *best model* is the final choice of the evaluation protocol (the leaderboard's
top family, ranked over finalist seeds), and of its finalist re-runs the seed with
the highest validation metric. Only finalists have stored weights, so a search
without a finished finalist has nothing to export (Conflict, 409).

Contents: ``model.pt2`` (``torch.export`` program: rows in, logits or regression
outputs out), ``state_dict.pt`` (plain tensors, ``torch.load(weights_only=True)``),
``meta.json`` (architecture, family and parameters, scaler, class names, task,
metric, how to load) and ``README.txt``.

``activations="distilled"`` exports the same network with every activation replaced
by its piecewise-linear distillation (:func:`search.analysis.distillation.distil_network`), so
the program computes only matmuls and ``PiecewiseLinear`` lookups; meta.json then says
so and carries the knots and the measured accuracy change (validation, and test: the
exported model is the final choice, the one the protocol scores on test).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from typing import Any

from sqlalchemy.orm import Session

from core.errors import Conflict, InvalidInput
from store import repo
from store.tables import SearchRow, TrialRow

from .protocol import build_leaderboard, task_metric
from .service import prepare_data
from .spec import SearchSpec

__all__ = ["ACTIVATIONS", "EXPORT_FORMAT", "best_finalist", "export_search", "readme_text"]

EXPORT_FORMAT = "actsearch-export/1"
ACTIVATIONS = ("learned", "distilled")

_SNIPPET_CLASSIFICATION = """\
import json, numpy as np, torch
meta = json.load(open("meta.json"))
model = torch.export.load("model.pt2").module()
x = (np.asarray(rows, dtype=np.float32) - meta["scaler"]["mean"]) / meta["scaler"]["std"]
logits = model(torch.from_numpy(x.astype(np.float32))).detach().numpy()
labels = np.asarray(meta["class_names"])[logits.argmax(1)]
"""

_SNIPPET_TOKENS = """\
import json, numpy as np, torch
meta = json.load(open("meta.json"))
model = torch.export.load("model.pt2").module()
tokens = torch.as_tensor(np.asarray(rows, dtype=np.int64))  # (batch, T) ids 0..vocab_size-1
logits = model(tokens).detach().numpy()  # no scaling: ids index the embedding
labels = np.asarray(meta["class_names"])[logits.argmax(1)]
"""

_SNIPPET_REGRESSION = """\
import json, numpy as np, torch
meta = json.load(open("meta.json"))
model = torch.export.load("model.pt2").module()
x = (np.asarray(rows, dtype=np.float32) - meta["scaler"]["mean"]) / meta["scaler"]["std"]
out = model(torch.from_numpy(x.astype(np.float32))).detach().numpy()
y = out * meta["target_scaler"]["std"] + meta["target_scaler"]["mean"]
"""


def _metric(search: SearchRow, task: str) -> str:
    if search.best and search.best.get("metric"):
        return str(search.best["metric"])
    return task_metric(task)


def best_finalist(session: Session, *, search_id: int) -> tuple[TrialRow, dict[str, Any]]:
    """The final choice's best finalist trial (with weights) and its leaderboard row.

    Raises Conflict when no finalist has finished yet (nothing has weights).
    """
    search = repo.get_search(session, search_id=search_id)
    task = repo.get_dataset(session, dataset_id=search.dataset_id).task
    trials = repo.list_trials(session, search_id=search_id, limit=None)
    board = build_leaderboard(trials, _metric(search, task))
    for row in board.rows:  # the winner first; fall back if its weights are missing
        runs = [t for t in trials if t.phase == "finalist" and t.family == row.family
                and t.state == "complete" and t.value is not None
                and repo.has_weights(session, trial_id=t.id)]
        if runs:
            best = max(runs, key=lambda t: (t.value, -t.id))
            return best, {"family": row.family, "mean": row.mean, "ci95": row.ci95,
                          "n_seeds": row.n_seeds, "rank": board.rows.index(row) + 1,
                          "metric": board.metric}
    raise Conflict(
        f"search {search_id} ({search.state}) has no finished finalist yet, so there is no "
        "trained model to export; try again once its finalists have run"
    )


def readme_text(meta: dict[str, Any]) -> str:
    """README.txt: what the files are and a six-line load-and-predict snippet."""
    snippet = _SNIPPET_CLASSIFICATION if meta["task"] == "classification" else _SNIPPET_REGRESSION
    if meta.get("modality") == "tokens" and meta["task"] == "classification":
        snippet = _SNIPPET_TOKENS
    lb = meta["leaderboard"]
    return (
        f"actsearch export: search {meta['search_id']} ({meta['search_name']}), "
        f"trial {meta['trial_id']}\n"
        f"family {meta['family']} {json.dumps(meta['family_params'])}\n"
        f"validation {meta['metric']} {lb['mean']:.4f} ± {lb['ci95']:.4f} over {lb['n_seeds']} "
        f"seeds (this seed: {meta['validation_metric']:.4f})\n"
        + _distilled_line(meta) + "\n"
        "Files:\n"
        "  model.pt2       torch.export program: float32 rows (B, n_inputs), standardised with\n"
        "                  meta.json's scaler, -> logits (B, classes) or regression output (B,)\n"
        "  state_dict.pt   the weights as plain tensors: torch.load(f, weights_only=True);\n"
        "                  loads into actsearch's models.network.PopulationNet (K=1) with\n"
        "                  load_candidate_state\n"
        "  meta.json       architecture, family and its parameters, scaler, class names, task\n\n"
        "Load and predict with only torch and numpy (rows: your raw feature rows, in the order\n"
        "of meta.json's feature_names):\n\n"
        + "".join(f"    {line}\n" for line in snippet.splitlines())
    )


def _distilled_line(meta: dict[str, Any]) -> str:
    d = meta.get("distillation")
    if not d:
        return "activations: learned\n"
    test = ("" if d.get("test_change") is None
            else f", test {d['test_before']:.4f} -> {d['test_after']:.4f}")
    return (f"activations: distilled (piecewise-linear within {100 * d['rel_error']:g}% of each curve's "
            f"range; validation {meta['metric']} {d['validation_before']:.4f} -> "
            f"{d['validation_after']:.4f}{test}; knots in meta.json)\n")


def _check_activations(activations: str) -> None:
    if activations not in ACTIVATIONS:
        raise InvalidInput(f"activations must be 'learned' or 'distilled', not {activations!r}; "
                           "'distilled' exports piecewise-linear copies of the learned curves")


def export_search(session: Session, *, search_id: int, activations: str = "learned") -> bytes:
    """The zip (bytes) of a search's best model with its ``learned`` or ``distilled`` activations.

    Conflict (409) if the search has no finalist yet, or (distilled) if its family mixes
    units and has no curve to distil; InvalidInput (422) for another ``activations``.
    """
    from models.export import SingleCandidate, export_program, single_candidate, state_dict_bytes

    _check_activations(activations)
    trial, lb = best_finalist(session, search_id=search_id)
    search = repo.get_search(session, search_id=search_id)
    dataset = repo.get_dataset(session, dataset_id=search.dataset_id)
    spec = SearchSpec.model_validate(search.spec)
    arch = spec.arch_spec()
    state_dict, scaler, label_map = repo.load_weights(session, trial_id=trial.id)
    task = dataset.task
    n_outputs = int(dataset.n_classes or 0) if task == "classification" else 1
    target_scaler = None
    prepared = None
    if task == "regression" or activations == "distilled":
        # Not stored with the weights: recompute the split from the same seed.
        prepared = prepare_data(session, dataset_id=dataset.id, spec=spec)
        target_scaler = prepared.splits.target_scaler

    module = single_candidate(arch, trial.family, trial.family_params, state_dict,
                              dataset.n_features, n_outputs, task)
    distillation = None
    if activations == "distilled":
        from .analysis.distillation import distil_for_export

        assert prepared is not None
        try:
            distilled, distillation = distil_for_export(module.net, prepared.splits)
        except ValueError as exc:
            raise Conflict(f"cannot export distilled activations for {trial.family}: {exc}; "
                           "export with activations=learned") from None
        module = SingleCandidate(distilled, task).eval()
    program = export_program(module, dataset.n_features)
    import torch

    schema = dataset.schema or {}
    modality = schema.get("modality") or "tabular"
    class_names = label_map if isinstance(label_map, list) else schema.get("class_names")
    meta: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "search_id": search.id,
        "search_name": search.name,
        "search_state": search.state,
        "study_name": search.study_name,
        "trial_id": trial.id,
        "source_trial_number": trial.source_trial_number,
        "seed": trial.seed,
        "family": trial.family,
        "family_params": trial.family_params,
        "hparams": trial.hparams,
        "architecture": arch.to_dict(),
        "task": task,
        "metric": lb["metric"],
        "validation_metric": trial.value,
        "test_metric": trial.test_value,
        "leaderboard": lb,
        "n_inputs": dataset.n_features,
        "n_outputs": n_outputs,
        "feature_names": schema.get("feature_names"),
        "label_name": schema.get("label_name"),
        "class_names": class_names if task == "classification" else None,
        "scaler": scaler,
        "target_scaler": target_scaler,
        "dataset": {"id": dataset.id, "name": dataset.name, "version": dataset.version,
                    "content_hash": dataset.content_hash},
        "n_params": trial.n_params,
        "flops": trial.flops,
        "activations": activations,
        "distillation": distillation,
        "torch_version": torch.__version__,
        "modality": modality,
        "vocab_size": schema.get("vocab_size"),
        "input": ({"dtype": "int64", "shape": ["batch", dataset.n_features],
                   "preprocessing": "none: token ids 0..vocab_size-1"} if modality == "tokens"
                  else {"dtype": "float32", "shape": ["batch", dataset.n_features],
                        "preprocessing": "(x - scaler.mean) / scaler.std"
                        + (" (per channel; rows are C*H*W pixels in C, H, W order)"
                           if modality == "image" else "")}),
        "output": ("logits (batch, n_outputs); softmax for probabilities, argmax indexes "
                   "class_names" if task == "classification" else
                   "(batch,) standardised target; y = out * target_scaler.std + target_scaler.mean"),
        "how_to_load": {
            "program": "torch.export.load('model.pt2').module()",
            "state_dict": "torch.load('state_dict.pt', weights_only=True)",
        },
    }
    meta = _json_safe(meta)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.pt2", program)
        archive.writestr("state_dict.pt", state_dict_bytes(state_dict))
        archive.writestr("meta.json", json.dumps(meta, indent=2))
        archive.writestr("README.txt", readme_text(meta))
    return buf.getvalue()


def _json_safe(value: Any) -> Any:
    """Non-finite floats become null (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
