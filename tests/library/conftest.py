"""Library fixtures: a fresh ACTSEARCH_HOME per module, so the embedded database is the test's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import get_settings


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("lib-home")
    mp.setenv("ACTSEARCH_HOME", str(path))
    mp.delenv("ACTSEARCH_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield path
    mp.undo()
    get_settings.cache_clear()
