"""actsearch: activation-function search for your own data.

The product's packages sit beside this one (``models``, ``search``, ``store``);
this package holds what they share without pulling in any of them: the error
hierarchy, the settings and the command-line interface.
"""

__version__ = "0.1.0"
