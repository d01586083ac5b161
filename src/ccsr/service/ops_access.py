"""Who may see the operator routes when API keys are configured.

``/metrics`` (queue sizes, error counts), ``/docs`` and ``/redoc`` (the API
browser), and the worker details of ``/readyz`` (process ids, devices) tell
an outsider about the deployment. With keys configured they need a key,
unless the ``public_ops_routes`` setting opts them public (for a scraper on
a private network). ``/healthz``, the ready/loading status of ``/readyz``
and ``/openapi.json`` (the playground builds its form from it; it is the
public API contract) stay open.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

PRIVATE_PATHS = ("/metrics", "/docs", "/redoc", "/docs/oauth2-redirect")


def ops_allowed(request: Request) -> bool:
    """True when this request may see operator details."""
    settings = getattr(request.app.state, "settings", None)
    keyring = getattr(request.app.state, "keyring", None)
    if keyring is None or not keyring.enabled or getattr(settings, "public_ops_routes", False):
        return True
    return keyring.owner_for(request.headers.get("authorization")) is not None


class OpsRoutesGuard:
    """Pure ASGI middleware answering 401 on the private operator paths."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").rstrip("/") in PRIVATE_PATHS:
            if not ops_allowed(Request(scope)):
                response = JSONResponse(
                    {"detail": "This route needs an API key ('Authorization: Key <key>'), "
                               "or the setting public_ops_routes."},
                    status_code=401, headers={"WWW-Authenticate": "Key"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
