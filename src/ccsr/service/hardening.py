"""The defences every route shares, installed on the app in one call.

Kept apart from :mod:`ccsr.service.app` so the wiring of the routes and the
wiring of the guards change independently. Order matters: the body limit
wraps everything that reads a body, so nothing inside it (the JSON guard, the
routes) ever buffers more than the limit; outside it only the last resort
that turns an unhandled exception into a JSON 500.
"""

from __future__ import annotations

from fastapi import FastAPI

from ccsr.jobs.idempotency import IdempotencyStore
from ccsr.service import bodylimit, guards
from ccsr.service.ops_access import OpsRoutesGuard
from ccsr.settings import Settings


def install(app: FastAPI, settings: Settings) -> None:
    """Register the guards on ``app`` (call once, after the routers)."""
    # Idempotency keys share the job database; the table is created with the others at start.
    app.state.idempotency = IdempotencyStore(app.state.store.engine, ttl=settings.idempotency_ttl,
                                           pending_timeout=settings.idempotency_pending_timeout)
    guards.install(app)
    app.add_middleware(OpsRoutesGuard)
    app.add_middleware(
        bodylimit.BodyLimit,
        limit_for=bodylimit.limits_by_path(settings.max_request_body_bytes, settings.max_upload_bytes),
    )
    # Added last, so outermost of ours: no exception escapes to the server, which
    # would close a keep-alive connection (guards.InternalErrors).
    app.add_middleware(guards.InternalErrors)
