"""``/docs`` (Swagger UI) served from the package, never a CDN.

FastAPI's own pages load their JavaScript and CSS from jsDelivr, so they are
blank on an offline GPU box. The assets here come from the ``fastapi-offline``
distribution (Swagger UI 5, which renders OpenAPI 3.1), served under
``/docs/assets``; the page itself is FastAPI's template. There is no
``/redoc``: ReDoc fetches its logo from a CDN even when bundled.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"


def assets_dir() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).resolve().parent / "static"


def mount(app: FastAPI) -> None:
    """Add ``/docs`` and its assets. Build the app with
    ``docs_url=None, redoc_url=None`` so FastAPI's CDN pages are not there first."""
    app.mount(ASSETS, StaticFiles(directory=assets_dir()), name="docs-assets")
    title = f"{app.title} API"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=title,
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        )
