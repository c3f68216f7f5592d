"""HTML pages of the dashboard: one shell per page, filled in by its ES module."""

from __future__ import annotations

from functools import cache
from html import escape
from importlib import resources
from string import Template

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from core import __version__

router = APIRouter(include_in_schema=False)

# page key -> (title, script under /ui/static/js/)
PAGES: dict[str, tuple[str, str]] = {
    "searches": ("Searches", "searches.js"),
    "search": ("Search", "search.js"),
    "trial": ("Trial", "trial.js"),
    "new": ("New search", "new.js"),
    "schedules": ("Schedules", "schedules.js"),
}


@cache
def _shell() -> Template:
    text = resources.files("api.dashboard").joinpath("templates/page.html").read_text("utf-8")
    return Template(text)


def render(page: str, *, ident: int | None = None) -> HTMLResponse:
    """The shell of ``page`` with its script and the id it shows (if any)."""
    title, script = PAGES[page]
    full = f"{title} {ident}" if ident is not None else title
    html = _shell().substitute(
        title=escape(full), page=page, ident="" if ident is None else str(ident),
        script=script, version=escape(__version__),
        **{f"nav_{key}": ' aria-current="page"' if key == page else "" for key in PAGES},
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})


@router.get("/", response_class=HTMLResponse)
def searches_page() -> HTMLResponse:
    """All searches with live progress."""
    return render("searches")


@router.get("/ui", response_class=HTMLResponse)
@router.get("/ui/", response_class=HTMLResponse)
@router.get("/ui/searches", response_class=HTMLResponse)
def searches_page_alias() -> HTMLResponse:
    """The searches page under /ui as well."""
    return render("searches")


@router.get("/ui/searches/{search_id}", response_class=HTMLResponse)
def search_page(search_id: int) -> HTMLResponse:
    """One search: leaderboard, history, importance, trials, learned curves."""
    return render("search", ident=search_id)


@router.get("/ui/trials/{trial_id}", response_class=HTMLResponse)
def trial_page(trial_id: int) -> HTMLResponse:
    """One trial: hyperparameters, epochs, learned activation per layer, fits, export."""
    return render("trial", ident=trial_id)


@router.get("/ui/new", response_class=HTMLResponse)
def new_search_page() -> HTMLResponse:
    """The new-search form."""
    return render("new")


@router.get("/ui/schedules", response_class=HTMLResponse)
def schedules_page() -> HTMLResponse:
    """Recurring searches: list, create, pause/resume, delete."""
    return render("schedules")
