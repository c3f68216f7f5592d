"""Export one trained candidate as a plain PyTorch module: ``torch.export`` program and state_dict.

The population network computes K candidates at once and returns ``(K, B, C)``;
a user deploying the winner wants one model taking rows and returning outputs,
loadable without actsearch. :class:`SingleCandidate` wraps a K=1 network into
exactly that, and :func:`export_program` serialises it with ``torch.export`` (a
graph, no pickled Python classes), so ``torch.export.load`` is all a consumer
needs. Imports torch and numpy only.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .engine import build_network
from .network import ActParams, PopulationNet
from .spec import ArchSpec

__all__ = [
    "SingleCandidate",
    "export_program",
    "load_program",
    "single_candidate",
    "state_dict_bytes",
]


class SingleCandidate(nn.Module):
    """One candidate as a deployable module.

    Forward: ``x (B, D) float32 -> (B, C)`` logits for classification, or ``(B,)``
    for regression (in the standardised target units the model was trained on).
    Inputs must be standardised with the training scaler, as during training.
    """

    def __init__(self, net: PopulationNet, task: str) -> None:
        super().__init__()
        if net.k != 1:
            raise ValueError(f"SingleCandidate wraps a K=1 network, got K={net.k}")
        self.net = net
        self.regression = task == "regression"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)[0]  # (B, C)
        return out[:, 0] if self.regression else out


def single_candidate(
    arch: ArchSpec,
    family: str | Sequence[str],
    act_params: ActParams,
    state_dict: Mapping[str, Any],
    n_inputs: int,
    n_outputs: int,
    task: str,
) -> SingleCandidate:
    """Build the K=1 network, load the candidate's state and wrap it (eval mode, CPU)."""
    net = build_network(arch, family, [act_params], n_inputs, n_outputs)
    net.load_candidate_state(state_dict)
    return SingleCandidate(net, task).eval()


def export_program(module: nn.Module, n_inputs: int, *, example_rows: int = 4) -> bytes:
    """``torch.export`` the module with a dynamic batch size; the ``torch.export.save`` bytes.

    The program takes float32 rows, or int64 token ids for a network whose
    ``input_dtype`` says so (the transformer).
    """
    module = module.eval()
    net = getattr(module, "net", None)
    dtype = getattr(net, "input_dtype", torch.float32)
    example = torch.zeros(example_rows, n_inputs, dtype=dtype)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.export.export(module, (example,), dynamic_shapes={"x": {0: batch}})
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def load_program(data: bytes) -> nn.Module:
    """The callable module of an exported program's bytes (for tests and consumers)."""
    return torch.export.load(io.BytesIO(data)).module()


def state_dict_bytes(state_dict: Mapping[str, Any]) -> bytes:
    """A candidate state dict as ``torch.save`` bytes of plain tensors.

    Loadable with ``torch.load(f, weights_only=True)`` (no pickled classes) and then
    with :meth:`models.network.PopulationNet.load_candidate_state` into a K=1 net.
    """
    tensors = {str(k): torch.from_numpy(np.ascontiguousarray(v)).clone()
               for k, v in state_dict.items()}
    buf = io.BytesIO()
    torch.save(tensors, buf)
    return buf.getvalue()
