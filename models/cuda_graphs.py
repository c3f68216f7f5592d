"""CUDA-graph replay of one training step, so a population is not bound by kernel launches.

A population's step is ~60 small kernel launches (forward, backward, optimizer). On a
GPU the host needs ~2 ms to issue them, longer than the GPU needs to run them for
K up to a few hundred (measured on an H100: K=256 of ``mlp:256,256`` at batch 128
kept the GPU busy 48% of the time). Capturing the step once and replaying it issues
the whole step with one call.

Only full-size batches are graphed (the epoch's last, shorter batch runs eagerly).
The step must read its inputs from fixed tensors (batch indices, the learning-rate
multiplier) and keep every state update in place: see :func:`models.engine.train_population`.
A graph belongs to one population shape; compaction makes a new one (:meth:`reset`).
``ACTSEARCH_CUDA_GRAPHS=0`` turns graphs off; a failed capture falls back to eager
steps for the rest of the population, with one warning.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import torch

WARMUP_STEPS = 2  # eager steps on a side stream before capture (lazy init of cuBLAS etc.)


def graphs_enabled(device: torch.device) -> bool:
    """CUDA graphs for this device, unless ``ACTSEARCH_CUDA_GRAPHS`` says off."""
    flag = os.environ.get("ACTSEARCH_CUDA_GRAPHS", "1").strip().lower()
    return device.type == "cuda" and flag not in ("0", "off", "false", "no")


class GraphedStep:
    """Runs ``step`` eagerly for :data:`WARMUP_STEPS` calls, then captures and replays it.

    Every call performs exactly one real training step (warm-up steps are real steps
    run on a side stream; the capturing call replays the graph it just recorded).
    ``on_failure`` restores any host-side state a failed capture changed.
    """

    def __init__(self, step: Callable[[], None], on_failure: Callable[[], None] | None = None):
        self.step = step
        self.on_failure = on_failure
        self.graph: Any = None
        self.warm = 0
        self.failed = False

    def reset(self) -> None:
        """Forget the graph (the population's tensors changed shape)."""
        self.graph = None
        self.warm = 0

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        if self.failed:
            self.step()
            return
        if self.warm < WARMUP_STEPS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.step()
            torch.cuda.current_stream().wait_stream(side)
            self.warm += 1
            return
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.step()
        except Exception as exc:  # an op that cannot be captured: eager from now on
            self.failed = True
            warnings.warn(f"CUDA graph capture failed, training eagerly: {exc}", stacklevel=2)
            if self.on_failure is not None:
                self.on_failure()
            torch.cuda.synchronize()
            self.step()
            return
        self.graph = graph
        graph.replay()
