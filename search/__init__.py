"""The search: spec, space, samplers and pruners, planner, protocol, datasets, coordinator."""

from __future__ import annotations

import warnings

# PartialFixedSampler and the multivariate/constant-liar TPE options are marked
# experimental; they are the documented way to pin a family per population. Filtered
# by optuna's message, not its ExperimentalWarning class: importing optuna here would
# put it in front of every process that touches this package (a training child, whose
# start is on the way to the first epoch, never needs optuna).
warnings.filterwarnings("ignore", message=r".* is experimental \(supported from v")
warnings.filterwarnings("ignore", message=r"Argument ``\w+`` is an experimental feature")
