"""The browser playground, served by ``ccsr serve`` at ``/``.

Plain HTML, CSS and ES modules (no build step): the page reads the input
schema from ``/openapi.json`` at run time and talks to the same queue routes as
every other client, so it needs nothing from the server beyond :func:`mount`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
INDEX = WEB_DIR / "index.html"

#: Where the page's assets live; chosen not to clash with the API prefixes.
ASSET_PREFIX = "/playground"

# The page is small and changes with the package: make browsers revalidate
# rather than keep a stale copy after an upgrade.
_NO_STALE = {"Cache-Control": "no-cache"}


class _Assets(StaticFiles):
    async def get_response(self, path, scope):  # noqa: ANN001
        resp = await super().get_response(path, scope)
        resp.headers.update(_NO_STALE)
        return resp


def mount(app: FastAPI) -> None:
    """Serve the playground: ``/`` (the page) and ``/playground/*`` (its assets)."""

    @app.get("/", include_in_schema=False)
    async def playground_page() -> FileResponse:
        return FileResponse(INDEX, media_type="text/html", headers=_NO_STALE)

    @app.get(ASSET_PREFIX, include_in_schema=False)
    async def playground_redirect() -> RedirectResponse:
        return RedirectResponse("/")

    app.mount(ASSET_PREFIX, _Assets(directory=STATIC_DIR), name="playground")
