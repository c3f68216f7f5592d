"""actsearch: activation-function search for your own data, and your own model.

The library (``import actsearch``)::

    result = actsearch.search((X, y), arch="mlp:64,64", trials=32, epochs=20)
    result = actsearch.search_module(build, (X, y))   # build(act) -> your nn.Module
    result.leaderboard; result.trials; result.best_model(); result.predict(X)
    actsearch.load(search_id); actsearch.resume(search_id, build=build)

The product's packages sit beside this one (``models``, ``search``, ``store``); this
package is the top: the CLI, the HTTP client and the library. Importing it loads
none of torch, optuna or sqlalchemy; the functions import them when called.
"""

from core.errors import (
    ActsearchError,
    Conflict,
    InvalidDataset,
    InvalidInput,
    NotFound,
    UnknownActivation,
)

from .library import load, resume, search, search_module
from .result import SearchResult

__version__ = "0.1.0"

__all__ = [
    "ActsearchError",
    "Conflict",
    "InvalidDataset",
    "InvalidInput",
    "NotFound",
    "SearchResult",
    "UnknownActivation",
    "__version__",
    "load",
    "resume",
    "search",
    "search_module",
]
