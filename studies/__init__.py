"""Reproducible studies that print tables and write plots (issue #6, part 3).

Like ``bench/``, studies are run by hand (``python -m studies.activation_study``), never
as tests; their generated results (JSON, PNG, REPORT.md) are committed beside them.
"""
