"""The web dashboard: HTML pages at ``/`` and ``/ui/...`` over the JSON API.

The pages are a small vanilla-JS app (ES modules under ``api/static/js``) that
reads only the JSON endpoints; charts are drawn by uPlot, vendored under
``api/static/vendor/uplot`` so the dashboard works offline. Nothing is built at
install time. :func:`install_dashboard` is the one call ``create_app`` makes.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from api.dashboard import importance, pages
from api.deps import AUTH_RESPONSES, get_principal

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter()
router.include_router(pages.router)  # HTML shells: no data in them, public
router.include_router(importance.router, dependencies=[Depends(get_principal)],
                      responses=AUTH_RESPONSES)

__all__ = ["STATIC_DIR", "install_dashboard", "router"]


def install_dashboard(app: FastAPI) -> None:
    """Mount the static files at ``/ui/static`` and add the pages and their JSON helpers."""
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
    app.include_router(router)
