"""Benchmarks that print figures (ratios against a baseline measured in the same run).

Never run as tests. The GPU benchmarks import only ``models`` and torch.
"""
