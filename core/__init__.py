"""The foundation every layer shares: one ``Settings`` and one exception hierarchy.

It imports nothing of actsearch's other packages (only pydantic and pydantic-settings),
so ``models/``, ``store/``, ``search/``, ``worker/`` and ``api/`` can all depend on it
without depending on each other or on the CLI at the top (``actsearch/``).
"""

__version__ = "0.1.0"
