"""The search: spec, space, samplers and pruners, planner, protocol, datasets, coordinator."""

from __future__ import annotations

import warnings

from optuna.exceptions import ExperimentalWarning

# PartialFixedSampler and the multivariate/constant-liar TPE options are marked
# experimental; they are the documented way to pin a family per population.
warnings.filterwarnings("ignore", category=ExperimentalWarning)
