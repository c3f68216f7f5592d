"""What a search learned: closed-form fits of learned curves, distillation and merging.

* :mod:`.curves`: per-curve analysis (closed forms, near-linear detection, piecewise-linear
  distillation) stored as fits beside each trainable trial.
* :mod:`.distillation`: network-level distillation and merging of the finalists.
* :mod:`.run`: both, for a complete search, off the critical path (after its leaderboard
  is stored), with the search's ``analysis_state``.
"""
