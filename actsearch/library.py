"""``actsearch.search``, ``search_module`` and ``load``: the library a notebook calls.

Searches run embedded, in the same database the CLI and the dashboard use
(``ACTSEARCH_HOME``), through the same state machine: ``search`` with the
:class:`~search.coordinator.EmbeddedCoordinator` (training children), and
``search_module`` with the in-process executor of :mod:`search.coordinator.module` (the
user's code runs in the user's process only). Heavy imports (torch, optuna,
sqlalchemy) happen inside the functions, so ``import actsearch`` stays cheap.

Analysis: closed-form fits and distillation run after the search is complete, in a
background thread the result starts (``result.analysis_state``, ``result.wait_analysis()``,
``result.fits()``); the leaderboard, trials and curves are there before it.

Progress: ``tqdm.auto``. In Jupyter it is a widget when ipywidgets is installed and
plain text otherwise, in a terminal a text bar, and it needs no live display
(rich's ``Live`` in Jupyter needs ipywidgets, and redraws badly in plain-text
notebook output). Without tqdm, no bar is shown.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.errors import InvalidDataset, InvalidInput

from .result import SearchResult

_DB: dict[str, Any] = {}


def _db() -> tuple[str, Any]:
    """The embedded database URL and a session factory (migrated once per process)."""
    from core.settings import get_settings

    url = get_settings().resolved_database_url
    if url not in _DB:
        from search.coordinator import clear_caches
        from store.db import init_db, make_engine, session_factory

        if _DB:
            # Another database in this process (ACTSEARCH_HOME changed): the per-process
            # caches of prepared splits are keyed by dataset id, which the two share.
            clear_caches()

        init_db(url)
        _DB[url] = session_factory(make_engine(url))
    return url, _DB[url]


# --------------------------------------------------------------------------- data
def _dataset_from(data: Any, label: str | None, task: str | None, name: str | None) -> Any:
    """A validated :class:`~search.datasets.Dataset` from arrays, a DataFrame, a path or a name."""
    import pandas as pd

    from search.datasets import resolve_dataset
    from search.datasets.memory import from_arrays, from_frame

    if isinstance(data, tuple):
        if len(data) != 2:
            raise InvalidDataset(f"data as a tuple must be (X, y), got {len(data)} items")
        if label is not None:
            raise InvalidInput("label= names a DataFrame column or a file's label; (X, y) "
                               "already gives the labels")
        return from_arrays(data[0], data[1], name=name or "arrays", task=task)  # type: ignore[arg-type]
    if isinstance(data, pd.DataFrame):
        return from_frame(data, label=label, name=name or "dataframe", task=task)  # type: ignore[arg-type]
    if isinstance(data, str | Path):
        stored = _stored_dataset(str(data)) if not Path(data).is_file() else None
        ds = stored or resolve_dataset(data, label=label, task=task)  # type: ignore[arg-type]
        if name:
            ds.name = name
        return ds
    raise InvalidDataset(f"data must be (X, y) arrays, a pandas DataFrame, a file path or a "
                         f"built-in name, not {type(data).__name__}")


def _stored_dataset(name: str) -> Any:
    """The latest stored dataset called ``name`` (a built-in name always means the built-in)."""
    from core.errors import NotFound
    from search.datasets import BUILTINS, Dataset
    from store import repo
    from store.artifacts import get_artifact_bytes

    if name in BUILTINS:
        return None
    _, sessions = _db()
    with sessions() as session:
        try:
            row = repo.latest_dataset(session, name=name)
        except NotFound:
            return None
        return Dataset.from_npz_bytes(get_artifact_bytes(session, row.artifact_id))


def _register(data: Any, label: str | None, task: str | None, name: str | None
              ) -> tuple[dict[str, Any], Any]:
    """Store the data as a named, versioned dataset; returns the spec's dataset keys and it."""
    from search.service import register_dataset

    ds = _dataset_from(data, label, task, name)
    _, sessions = _db()
    with sessions.begin() as session:
        row = register_dataset(session, dataset=ds)
        keys = {"dataset": row.name, "dataset_version": row.version}
    return keys, ds


# --------------------------------------------------------------------------- progress
class _Bar:
    """A tqdm.auto bar fed by the coordinator's :class:`~search.coordinator.Progress`."""

    def __init__(self, enabled: bool, title: str) -> None:
        self.bar: Any = None
        self.finals: Any = None
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        self._tqdm = tqdm
        self.bar = tqdm(total=None, desc=title, unit="trial", dynamic_ncols=True)

    def __call__(self, p: Any) -> None:
        if self.bar is None:
            return
        best = "-" if p.best_value is None else f"{p.best_value:.4f} ({p.best_family})"
        self.bar.total = p.total
        self.bar.n = min(p.done, p.total)
        self.bar.set_postfix_str(f"pruned {p.pruned} failed {p.failed} best {best} {p.current}",
                                 refresh=False)
        self.bar.refresh()
        if p.phase == "finalists" and p.finalists_total:
            if self.finals is None:
                self.finals = self._tqdm(total=p.finalists_total, desc="finalists", unit="family")
            self.finals.n = p.finalists_done
            self.finals.refresh()

    def close(self) -> None:
        for bar in (self.bar, self.finals):
            if bar is not None:
                bar.close()


def _interruptible() -> Callable[[], None]:
    """SIGTERM stops the search like Ctrl-C (resumable); returns the undo. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def raise_interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, raise_interrupt)
    return lambda: signal.signal(signal.SIGTERM, old)


# --------------------------------------------------------------------------- search
def _options(keys: dict[str, Any], arch: Any, families: Sequence[str] | None, trials: int,
             epochs: int, spec: dict[str, Any]) -> dict[str, Any]:
    options = {**spec, **keys, "architecture": arch, "trials": trials, "epochs": epochs}
    if families is not None:
        if isinstance(families, str):
            families = [f.strip() for f in families.split(",") if f.strip()]
        options["families"] = list(families)
    return options


def search(data: Any, label: str | None = None, arch: str | dict[str, Any] = "mlp:64,64",
           families: Sequence[str] | None = None, trials: int = 64, epochs: int = 20, *,
           task: str | None = None, name: str | None = None, workers: int = 1,
           progress: bool = True, server: str | None = None, api_key: str | None = None,
           **spec: Any) -> SearchResult:
    """Search the activations of a built-in architecture on ``data``; returns its result.

    Args:
        data: ``(X, y)`` numpy arrays, a pandas DataFrame (``label`` names its label
            column), a CSV/Parquet/NPZ path, or a built-in name (``"digits"``).
        label: label column (DataFrame, CSV/Parquet) or y array (NPZ).
        arch: ``"mlp:64,64"``, ``"cnn:16,32/64"`` or the object form.
        families: families to search (ReLU is always added as the baseline).
        trials: tuning trials in all, split evenly across families.
        epochs: epochs per candidate.
        task: ``"classification"`` or ``"regression"``; inferred from the labels if None.
        workers: training processes (embedded).
        progress: show a progress bar.
        server: run on this actsearch service instead (the data is uploaded).
        api_key: the service's API key.
        **spec: any other search option (``sampler``, ``pruner``, ``seed``,
            ``population_size``, ``finalist_seeds``, ``batch_size``, ...); ``control="relu"``
            also runs a ReLU-only search with the same compute (``result.control``).

    Raises:
        InvalidInput, InvalidDataset, ...: actsearch's errors, with the CLI's messages.
    """
    if task is not None:
        spec["task"] = task
    if server is not None:
        from .library_remote import remote_library_search

        return remote_library_search(server, api_key, data, label, _options(
            {}, arch, families, trials, epochs, spec), name=name, progress=progress)
    from search.service import create_search
    from search.spec import parse_spec

    # Check the spec before storing anything (a bad option leaves no dataset behind).
    parse_spec(_options({"dataset": "digits"}, arch, families, trials, epochs,
                        {k: v for k, v in spec.items() if k != "task"}))
    if isinstance(data, str | Path):
        # A built-in, a file or a stored dataset's name: resolved as `actsearch search` does.
        keys: dict[str, Any] = {"dataset": str(data)}
        if label is not None:
            keys["label"] = label
    else:
        keys, _ = _register(data, label, task, name)
    options = _options(keys, arch, families, trials, epochs, spec)
    search_spec = parse_spec(options)
    url, sessions = _db()
    with sessions.begin() as session:
        row = create_search(session=session, spec=search_spec, storage_url=url, run_here=True,
                            name=name)
        search_id = row.id
    from search.coordinator import EmbeddedCoordinator

    bar = _Bar(progress, f"search {search_id}")
    coordinator = EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id,
                                      workers=workers, progress=bar)
    undo = _interruptible()
    try:
        coordinator.run()
    finally:
        undo()
        bar.close()
    result = SearchResult(search_id, sessions=sessions, url=url)
    result.start_analysis()  # fits and distillation, behind the returned result
    return result


DEFAULT_REPLACE: tuple[str, ...] = ("ReLU", "GELU", "SiLU", "ELU", "LeakyReLU", "Tanh",
                                    "Sigmoid", "Mish", "SELU", "Softplus", "PReLU", "Hardswish")


def search_module(build: Any, data: Any, label: str | None = None,
                  families: Sequence[str] | None = None, trials: int = 32, epochs: int = 20, *,
                  replace: Sequence[type] | None = None, task: str | None = None,
                  name: str | None = None, fused: bool | None = None, progress: bool = True,
                  **spec: Any) -> SearchResult:
    """Search the activations of your own ``nn.Module``; returns the same result as ``search``.

    Args:
        build: ``build(act) -> nn.Module`` calling ``act()`` (or ``act(width)``) wherever
            an activation goes; or an existing ``nn.Module`` whose activation modules
            (``replace``) are swapped for each candidate's, on a deep copy.
        data: as :func:`search`; N-D ``X`` rows reach the module in their own shape
            (``(N, 1, 8, 8)`` images stay images).
        replace: module types to replace in a given model (default: the common
            activation modules of ``torch.nn``).
        fused: None trains a population's candidates fused (``torch.func`` + ``vmap``)
            when their modules share structure and run under vmap, else one by one;
            True/False forces one mode.
        **spec: any other search option, as :func:`search`.

    Training runs in this process (the module is your code: it never leaves it,
    and the service never runs code). Same protocol: a tuned ReLU baseline,
    finalists re-trained on seeds, one test score of the final choice.
    """
    import torch
    from torch import nn

    from models.user_module import check_shape_preserving, probe_module, replacing_build
    from search.coordinator.module import ModuleTrainer, run_module_search
    from search.service import create_search
    from search.spec import parse_spec

    if isinstance(build, nn.Module):
        types = tuple(replace) if replace is not None else tuple(
            getattr(nn, n) for n in DEFAULT_REPLACE)
        build = replacing_build(build, types)
    elif replace is not None:
        raise InvalidInput("replace= applies to an existing nn.Module; a build(act) function "
                           "places act() itself")
    elif not callable(build):
        raise InvalidInput(f"build must be a function build(act) -> nn.Module, or an nn.Module; "
                           f"got {type(build).__name__}")
    if task is not None:
        spec["task"] = task
    ds = _dataset_from(data, label, task, name)
    x = torch.as_tensor(ds.X[:2])
    if ds.input_shape:
        x = x.reshape(x.shape[0], *ds.input_shape)
    try:
        shape = probe_module(build, x)
    except (InvalidInput, InvalidDataset):
        raise
    except Exception as exc:
        raise InvalidInput(f"your module failed on a batch of the data (rows shaped "
                           f"{tuple(x.shape[1:])}): {type(exc).__name__}: {exc}") from exc
    if shape.n_outputs != ds.n_outputs:
        what = f"{ds.n_classes} classes" if ds.task == "classification" else "one target"
        raise InvalidInput(f"your {shape.name} outputs {shape.n_outputs} values per row, but the "
                           f"data has {what} ({ds.task}); make its last layer {ds.n_outputs} wide")
    arch = {"kind": "module", "name": shape.name, "slots": shape.slots,
            "input_shape": list(ds.input_shape) if ds.input_shape else None}
    parse_spec(_options({"dataset": ds.name}, arch, families, trials, epochs, spec))
    keys, _ = _store(ds)
    search_spec = parse_spec(_options(keys, arch, families, trials, epochs, spec))
    for family in search_spec.families:
        check_shape_preserving(family)
    url, sessions = _db()
    with sessions.begin() as session:
        row = create_search(session=session, spec=search_spec, storage_url=url, run_here=True,
                            name=name or f"{keys['dataset']} {shape.name}")
        search_id = row.id
    from core.settings import get_settings

    bar = _Bar(progress, f"search {search_id} ({shape.name})")
    undo = _interruptible()
    trainer = ModuleTrainer(build, shape.slots, fused)
    try:
        run_module_search(sessions=sessions, storage_url=url, search_id=search_id,
                          trainer=trainer, home=get_settings().home, progress=bar)
    finally:
        undo()
        bar.close()
    result = SearchResult(search_id, sessions=sessions, url=url, build=build)
    result.start_analysis()  # curve fits (a user module is not distilled), behind the result
    return result


def _store(ds: Any) -> tuple[dict[str, Any], Any]:
    from search.service import register_dataset

    _, sessions = _db()
    with sessions.begin() as session:
        row = register_dataset(session, dataset=ds)
        return {"dataset": row.name, "dataset_version": row.version}, ds


def resume(search_id: int, *, build: Any = None, workers: int = 1,
           progress: bool = True) -> SearchResult:
    """Resume a search whose process stopped (Ctrl-C in a notebook, a crash) where it stopped.

    A ``search_module`` search needs its ``build`` again (or the model given then):
    only this process can build it. Finished trials are kept; a complete search is
    returned as it is.
    """
    from core.settings import get_settings
    from models.user_module import replacing_build
    from store import repo

    url, sessions = _db()
    with sessions() as session:
        row = repo.get_search(session, search_id=search_id)
        state = row.state
    result = SearchResult(search_id, sessions=sessions, url=url, build=build)
    if state in ("complete", "failed", "cancelled"):
        result.start_analysis()  # a pending analysis (its process stopped) goes on here
        return result
    spec = result.spec
    bar = _Bar(progress, f"search {search_id} (resumed)")
    undo = _interruptible()
    try:
        if spec.is_module:
            from torch import nn

            from search.coordinator.module import ModuleTrainer, run_module_search

            if build is None:
                raise InvalidInput(f"search {search_id} trains your own module "
                                   f"({spec.module_arch().name}); pass build= to resume it")
            if isinstance(build, nn.Module):
                build = replacing_build(build, tuple(getattr(nn, n) for n in DEFAULT_REPLACE))
                result = SearchResult(search_id, sessions=sessions, url=url, build=build)
            run_module_search(sessions=sessions, storage_url=url, search_id=search_id,
                              trainer=ModuleTrainer(build, spec.module_arch().slots),
                              home=get_settings().home, progress=bar)
        else:
            from search.coordinator import EmbeddedCoordinator

            EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id,
                                workers=workers, progress=bar).run()
    finally:
        undo()
        bar.close()
    result.start_analysis()
    return result


def load(search_id: int, *, build: Any = None) -> SearchResult:
    """A stored search from the embedded database (``build``: a ``search_module`` search's)."""
    from store import repo

    url, sessions = _db()
    with sessions() as session:
        repo.get_search(session, search_id=search_id)  # NotFound, with its message
    return SearchResult(search_id, sessions=sessions, url=url, build=build)
