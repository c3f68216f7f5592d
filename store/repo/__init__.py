"""Keyword-only data access used by ``search/``, the workers, the API and the CLI.

Every function takes the caller's session and never commits: the caller's
``store.db.session_scope`` decides the unit of work. New rows are flushed so
their ids are usable at once. Missing ids raise ``NotFound``; state changes that
the current state forbids raise ``Conflict``; malformed input ``InvalidInput``.

Values bound for JSON columns are normalised first (numpy scalars and arrays to
Python, NaN/inf to null, dict keys to strings) because PostgreSQL's ``json``
rejects NaN and neither backend can store numpy types.

The functions live in one module per resource (``datasets``, ``searches``,
``populations``, ``trials``, ``weights``, ``schedules``; shared helpers in
``_common``) and are all re-exported here, so ``from store import repo`` and
``repo.<name>`` work as before; so do the names the former flat module imported
(errors, table rows and state constants, ``utcnow``, ...).
"""

from __future__ import annotations

import io  # noqa: F401
import math  # noqa: F401
import zipfile  # noqa: F401
from collections.abc import (  # noqa: F401
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from datetime import (  # noqa: F401
    datetime,
    timedelta,
)
from pathlib import (  # noqa: F401
    Path,
)
from typing import (  # noqa: F401
    Any,
)

import numpy as np  # noqa: F401
from sqlalchemy import (  # noqa: F401
    ColumnElement,
    Select,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.exc import (  # noqa: F401
    IntegrityError,
)
from sqlalchemy.orm import (  # noqa: F401
    Session,
)

from core.errors import (  # noqa: F401
    Conflict,
    InvalidInput,
    NotFound,
)
from store.arrays import (  # noqa: F401
    pack,
    unpack,
)
from store.artifacts import (  # noqa: F401
    get_artifact_bytes,
    put_artifact,
    sha256_hex,
)
from store.repo._common import (  # noqa: F401
    _check,
    _num,
    _page,
    _require,
    _won,
    jsonable,
)
from store.repo.datasets import (  # noqa: F401
    _DATASET_OPTIONAL,
    _DATASET_REQUIRED,
    _dataset_fields,
    _latest_or_none,
    _same_dataset,
    add_dataset,
    count_datasets,
    dataset_bytes,
    dataset_ids_by_name,
    get_dataset,
    get_dataset_version,
    latest_dataset,
    list_datasets,
)
from store.repo.keys import (  # noqa: F401
    authenticate_key,
    check_owner,
    create_api_key,
    get_api_key,
    hash_key,
    list_api_keys,
    revoke_api_key,
)
from store.repo.populations import (  # noqa: F401
    add_population,
    cancel_pending_populations,
    claim_population,
    fail_stale_population,
    get_population,
    heartbeat_owned_population,
    heartbeat_population,
    list_populations,
    lock_population,
    record_asked_trials,
    requeue_population,
    set_population_state,
    stale_populations,
    waiting_populations,
)
from store.repo.schedules import (  # noqa: F401
    _schedule_filters,
    add_schedule,
    claim_schedule_run,
    count_schedule_searches,
    count_schedules,
    delete_schedule,
    due_schedules,
    get_schedule,
    list_schedules,
    record_schedule_result,
    schedule_searches,
    set_schedule_state,
)
from store.repo.searches import (  # noqa: F401
    _SEARCH_RANK,
    _architecture_kind,
    _search_filters,
    best_search_trial,
    count_active_searches,
    count_searches,
    create_search,
    get_search,
    get_search_by_study,
    list_searches,
    lock_search,
    oldest_pending_search,
    search_ids_by_architecture,
    search_population_counts,
    search_trial_counts,
    set_search_state,
    transition_search,
)
from store.repo.trials import (  # noqa: F401
    _RESULT_FIELDS,
    _TRIAL_ORDER,
    _apply_results,
    _field,
    _replace_keys,
    _trial_filters,
    _trial_query,
    add_curves,
    add_epoch_metrics,
    add_fits,
    add_preact_stats,
    add_trial,
    count_trials,
    find_trial,
    finish_trial,
    get_trial,
    list_trials,
    query_trials,
    set_trial_test_value,
    trial_curves,
    trial_epochs,
    trial_fits,
    trial_preact_stats,
)
from store.repo.weights import (  # noqa: F401
    _ZIP_EPOCH,
    _npz_bytes,
    _npz_load,
    has_weights,
    load_weights,
    save_weights,
)
from store.tables import (  # noqa: F401
    DATASET_SOURCES,
    FIT_KINDS,
    PHASES,
    POPULATION_STATES,
    SCHEDULE_KINDS,
    SCHEDULE_STATES,
    SEARCH_STATES,
    SEARCH_TERMINAL_STATES,
    TRIAL_STATES,
    ApiKeyRow,
    CurveRow,
    DatasetRow,
    EpochMetricRow,
    FitRow,
    PopulationRow,
    PreactStatRow,
    ScheduleRow,
    SearchRow,
    TrialRow,
    WeightsRow,
    utcnow,
)

__all__ = [
    "add_curves",
    "add_dataset",
    "add_epoch_metrics",
    "add_population",
    "add_preact_stats",
    "add_trial",
    "count_searches",
    "count_active_searches",
    "count_trials",
    "create_search",
    "dataset_bytes",
    "find_trial",
    "finish_trial",
    "get_dataset",
    "get_dataset_version",
    "get_population",
    "get_search",
    "get_search_by_study",
    "get_trial",
    "heartbeat_population",
    "latest_dataset",
    "list_datasets",
    "list_populations",
    "list_searches",
    "list_trials",
    "load_weights",
    "save_weights",
    "set_population_state",
    "set_search_state",
    "set_trial_test_value",
    "stale_populations",
    "trial_curves",
    "trial_epochs",
    "trial_preact_stats",
    "best_search_trial",
    "count_datasets",
    "dataset_ids_by_name",
    "has_weights",
    "oldest_pending_search",
    "query_trials",
    "search_ids_by_architecture",
    "search_population_counts",
    "search_trial_counts",
    "cancel_pending_populations",
    "claim_population",
    "fail_stale_population",
    "heartbeat_owned_population",
    "lock_population",
    "lock_search",
    "record_asked_trials",
    "requeue_population",
    "transition_search",
    "waiting_populations",
    "add_schedule",
    "claim_schedule_run",
    "count_schedule_searches",
    "count_schedules",
    "delete_schedule",
    "due_schedules",
    "get_schedule",
    "list_schedules",
    "record_schedule_result",
    "schedule_searches",
    "set_schedule_state",
    "authenticate_key",
    "check_owner",
    "create_api_key",
    "get_api_key",
    "hash_key",
    "list_api_keys",
    "revoke_api_key",
]
