"""PyTorch side of actsearch: activation families, networks, the population engine.

Imports only torch and numpy (and the dependency-free ``core`` package).
"""
