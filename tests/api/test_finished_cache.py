"""The API keeps responses about finished searches only, and only while they cannot change."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone

from api.finished import FinishedSearchCache


@dataclass(frozen=True)
class _Row:
    id: int = 1
    state: str = "complete"
    finished_at: datetime | None = datetime(2026, 12, 1, tzinfo=timezone.utc)
    analysis_state: str | None = "pending"


def _counting() -> tuple[list[int], object]:
    calls: list[int] = []

    def make() -> str:
        calls.append(1)
        return f"response {len(calls)}"

    return calls, make


def test_a_running_search_is_read_every_time() -> None:
    cache = FinishedSearchCache()
    calls, make = _counting()
    row = _Row(state="running", finished_at=None)
    assert [cache.get(row, "leaderboard", None, make) for _ in range(3)] == [
        "response 1", "response 2", "response 3"]
    assert cache.peek(row, "leaderboard", None) is None


def test_a_finished_search_is_read_once_until_its_analysis_or_end_changes() -> None:
    cache = FinishedSearchCache()
    calls, make = _counting()
    row = _Row()
    assert cache.get(row, "leaderboard", None, make) == "response 1"
    assert cache.get(row, "leaderboard", None, make) == "response 1"
    assert len(calls) == 1
    # another kind, parameter or search is another response
    assert cache.get(row, "intermediate", None, make) == "response 2"
    assert cache.get(row, "importance", "fanova", make) == "response 3"
    assert cache.get(replace(row, id=2), "leaderboard", None, make) == "response 4"
    # the analysis finishing (or a resumed search ending again) makes it stale
    assert cache.get(replace(row, analysis_state="done"), "leaderboard", None,
                     make) == "response 5"
    later = datetime(2026, 12, 2, tzinfo=timezone.utc)
    assert cache.get(replace(row, finished_at=later), "leaderboard", None, make) == "response 6"


def test_the_least_recently_used_response_goes_first() -> None:
    cache = FinishedSearchCache(size=2)
    _, make = _counting()
    a, b, c = _Row(id=1), _Row(id=2), _Row(id=3)
    cache.get(a, "leaderboard", None, make)
    cache.get(b, "leaderboard", None, make)
    cache.get(a, "leaderboard", None, make)  # a is now the most recent
    cache.get(c, "leaderboard", None, make)  # evicts b
    assert cache.peek(a, "leaderboard", None) is not None
    assert cache.peek(b, "leaderboard", None) is None
    assert cache.peek(c, "leaderboard", None) is not None
