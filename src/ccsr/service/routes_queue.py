"""Queue and run routes, generated per registered app (docs/fal-protocol.md).

For an app with id ``<app>`` (e.g. ``fal-ai/ccsr``):

    POST /queue/<app>                                 submit
    GET  /queue/<app>/requests/{id}/status            status (?logs=1|0|true|false)
    GET  /queue/<app>/requests/{id}/status/stream     the same as Server-Sent Events
    GET  /queue/<app>/requests/{id}                   result
    PUT  /queue/<app>/requests/{id}/cancel            cancel
    POST /<app>                                       run and wait (sync)
    POST /<app>/stream                                run, streaming status, then the result

Status polling is served from the scheduler's memory; it never waits for the
database while a request is queued or running. (No ``from __future__ import
annotations`` here: the body type of each route is the app's own model, bound
when the route is made.)
"""

import contextlib
import json
import math
import uuid
from typing import Any, Optional

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ccsr.apps.base import App
from ccsr.errors import InvalidParameter
from ccsr.jobs.models import COMPLETED, PRIORITY_LOW, PRIORITY_NORMAL, QUEUED
from ccsr.jobs.scheduler import Scheduler
from ccsr.jobs.view import JobView
from ccsr.service.auth import get_owner
from ccsr.service.outcomes import error_body, error_status, validation_body
from ccsr.service.schemas import CancelResponse, QueueStatus, SubmitResponse, absolute_file_urls
from ccsr.service.status import status_body, status_events
from ccsr.service.idempotent_submit import submit_once
from ccsr.service.inline import gone_body, take_inline
from ccsr.service.urls import lifecycle_ttl, public_base_url
from ccsr.service.submit_checks import check_submitted_input
from ccsr.settings import Settings
from ccsr.storage import BlobStoreError, Storage, keys


def _truthy(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def request_urls(base: str, app_id: str, request_id: str) -> dict:
    root = f"{base}/queue/{app_id}/requests/{request_id}"
    return {"response_url": root, "status_url": root + "/status", "cancel_url": root + "/cancel"}


class Invalid(Exception):
    """A request rejected at submit; answered as FastAPI's 422 naming ``field``."""

    def __init__(self, field: str, message: str, loc: str = "body"):
        self.field, self.message, self.loc = field, message, loc


def invalid_response(exc: Invalid) -> JSONResponse:
    return JSONResponse(validation_body(exc.field, exc.message, exc.loc), status_code=422)


def check_webhook_url(url: str) -> Optional[str]:
    """A reason the webhook URL is unusable, or None. Where it may point (no
    private addresses) is checked again by the sender at delivery time."""
    if len(url) > 2048:
        return "must be at most 2048 characters"
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "must be an http(s) URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL"
    return None


class QueueAPI:
    """The route logic of one app, bound to the scheduler, the storage and settings."""

    def __init__(self, app: App, scheduler: Scheduler, storage: Storage, settings: Settings):
        self.app = app
        self.scheduler = scheduler
        self.storage = storage
        self.settings = settings

    def base(self, request: Request) -> str:
        return public_base_url(request, self.settings)

    def urls(self, base: str, request_id: str) -> dict:
        return request_urls(base, self.app.app_id, request_id)

    async def status_response(self, view: JobView, base: str, with_logs: bool) -> Response:
        """The status as a response, rendered once per change of the request.

        A hundred clients polling one running request at 10 Hz then cost a
        dictionary lookup each, not a JSON rendering of every log line."""
        queue = self.scheduler.queue_of(view)
        key = (view.version, queue.version if view.status == QUEUED else -1, base)
        hit = view.status_cache.get(with_logs)
        if hit is None or hit[0] != key:
            body = await status_body(self.scheduler, view, self.urls(base, view.request_id), with_logs)
            data = json.dumps(body, separators=(",", ":")).encode()
            hit = (key, data, 200 if body["status"] == "COMPLETED" else 202)
            if not (view.finished and with_logs):  # a finished request's logs are not kept in memory
                view.status_cache[with_logs] = hit
                self.scheduler.live.resize(view)
        return Response(hit[1], status_code=hit[2], media_type="application/json")

    async def lookup(self, request_id: str, owner: str) -> Optional[JobView]:
        """The request if it exists, is this app's and belongs to ``owner``; else None (404)."""
        view = await self.scheduler.get(request_id)
        if view is None or view.owner != owner or view.app_id != self.app.app_id:
            return None
        return view

    async def result_response(self, view: JobView, base: str) -> Response:
        headers = {"x-fal-request-id": view.request_id}
        if view.status == COMPLETED and view.result is not None:
            # sync_mode: the image inline, once (ccsr.service.inline); then a 410 saying so
            result = await self.storage.run(take_inline, view.result, self.storage)
            if result is None:
                return JSONResponse(gone_body(view.result), status_code=410, headers=headers)
            return JSONResponse(absolute_file_urls(result, base), headers=headers)
        if view.status == COMPLETED:  # delivered with X-Fal-Store-IO: 0 and then forgotten
            return JSONResponse({"detail": "The result is no longer stored."}, status_code=404, headers=headers)
        headers["x-fal-error-type"] = view.error_type or "internal_server_error"
        if view.error_type == "request_timeout":
            headers["x-fal-request-timeout-type"] = "user"
        return JSONResponse(error_body(view), status_code=error_status(view), headers=headers)

    async def submit(self, request: Request, inp: Any, owner: str, webhook: Optional[str]) -> JobView:
        """Accept a request (the first trust boundary): the typed parameters,
        stripped of ``image_url`` once, checked for everything that needs no image."""
        params = self.app.params_of(inp)
        try:
            self.app.check(params)
            # data URIs: size, base64 and image header, checked before anything is stored
            submitted = await check_submitted_input(inp, lambda w, h: self.app.check_image(params, w, h, self.settings),
                                                    self.settings)
        except InvalidParameter as exc:
            raise Invalid(exc.field, exc.message) from None
        headers = request.headers
        prio = headers.get("x-fal-queue-priority", "normal").strip().lower()
        if prio not in ("normal", "low"):
            raise Invalid("X-Fal-Queue-Priority", f"must be 'normal' or 'low', got {prio!r}", loc="header")
        timeout = None
        raw_timeout = headers.get("x-fal-request-timeout")
        if raw_timeout:
            try:
                timeout = float(raw_timeout)
                if not (timeout > 0 and math.isfinite(timeout)):
                    raise ValueError
            except ValueError:
                raise Invalid("X-Fal-Request-Timeout", f"must be a positive number of seconds, got {raw_timeout!r}",
                              loc="header") from None
        store_io = headers.get("x-fal-store-io", "1").strip() not in ("0", "false", "False")
        stored = inp.model_dump(mode="json")
        request_id = str(uuid.uuid4())
        if submitted is not None:
            # A data URI goes to the blob store, the row keeps a reference: the
            # database never holds image bytes (deleted when the request ends).
            # A store that does not answer makes this a 503 with Retry-After
            # (ccsr.service.guards), at once while it is known to be down.
            stored["image_url"] = await self.storage.run(self.storage.keep_submitted, request_id, *submitted)
        try:
            return await self.scheduler.submit(
                self.app.app_id,
                stored,
                request_id=request_id,
                params=params,
                owner=owner,
                priority=PRIORITY_LOW if prio == "low" else PRIORITY_NORMAL,
                base_url=self.base(request),
                webhook_url=webhook,
                start_timeout=timeout,
                ttl=lifecycle_ttl(request, None),
                store_io=store_io,
            )
        except BaseException:
            if submitted is not None:
                with contextlib.suppress(BlobStoreError):  # down meanwhile: the orphan blob is left behind
                    await self.storage.run(self.storage.discard, [keys.ref_key(stored["image_url"])])
            raise


def _not_found() -> JSONResponse:
    return JSONResponse({"detail": "Request not found."}, status_code=404)


def queue_router(api: QueueAPI) -> APIRouter:
    """The routes of ``api.app``."""
    router = APIRouter()
    sched = api.scheduler
    app_id = api.app.app_id
    Input = api.app.Input  # noqa: N806 - a model class, bound into the route signatures below
    Output = api.app.Output  # noqa: N806

    async def _submit(request: Request, inp: Any, owner: str, fal_webhook: Optional[str]) -> Response:
        if fal_webhook is not None:
            problem = check_webhook_url(fal_webhook)
            if problem:
                return invalid_response(Invalid("fal_webhook", problem, loc="query"))
        try:  # Idempotency-Key: a retried submit returns the first request
            view = await submit_once(request, owner, inp, fal_webhook, lambda: api.submit(request, inp, owner, fal_webhook))
        except Invalid as exc:
            return invalid_response(exc)
        body = {"request_id": view.request_id, **api.urls(api.base(request), view.request_id),
                "queue_position": sched.queue_position(view) if view.status == QUEUED else 0}
        return JSONResponse(body, headers={"x-fal-request-id": view.request_id})

    @router.post(f"/queue/{app_id}", response_model=SubmitResponse, tags=["queue"], summary=f"Submit a request to {app_id}")
    async def submit(request: Request, inp: Input = Body(...), owner: str = Depends(get_owner),
                     fal_webhook: Optional[str] = Query(None, description="URL to POST the result to")) -> Response:
        return await _submit(request, inp, owner, fal_webhook)

    @router.post(f"/queue/{app_id}/{{subpath:path}}", include_in_schema=False)
    async def submit_subpath(subpath: str, request: Request, inp: Input = Body(...),
                             owner: str = Depends(get_owner), fal_webhook: Optional[str] = Query(None)) -> Response:
        return await _submit(request, inp, owner, fal_webhook)

    @router.get(f"/queue/{app_id}/requests/{{request_id}}/status", response_model=QueueStatus, tags=["queue"],
                summary=f"Status of a {app_id} request")
    async def status(request_id: str, request: Request, logs: Optional[str] = Query(None),
                     owner: str = Depends(get_owner)) -> Response:
        view = await api.lookup(request_id, owner)
        if view is None:
            return _not_found()
        return await api.status_response(view, api.base(request), _truthy(logs))

    @router.get(f"/queue/{app_id}/requests/{{request_id}}/status/stream", tags=["queue"],
                summary=f"Status updates of a {app_id} request as Server-Sent Events", response_class=StreamingResponse)
    async def status_stream(request_id: str, request: Request, logs: Optional[str] = Query(None),
                            owner: str = Depends(get_owner)) -> Response:
        view = await api.lookup(request_id, owner)
        if view is None:
            return _not_found()
        urls = api.urls(api.base(request), view.request_id)
        return StreamingResponse(status_events(sched, view, urls, _truthy(logs)), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                          "x-fal-request-id": view.request_id})

    @router.get(f"/queue/{app_id}/requests/{{request_id}}", response_model=Output, tags=["queue"],
                summary=f"Result of a {app_id} request")
    async def result(request_id: str, request: Request, owner: str = Depends(get_owner)) -> Response:
        view = await api.lookup(request_id, owner)
        if view is None:
            return _not_found()
        if not view.finished:
            state = "in queue" if view.status == QUEUED else "in progress"
            return JSONResponse({"detail": f"Request is still {state}."}, status_code=400,
                                headers={"x-fal-request-id": view.request_id})
        resp = await api.result_response(view, api.base(request))
        if view.status == COMPLETED and resp.status_code == 200:
            await sched.delivered(view)
        return resp

    @router.put(f"/queue/{app_id}/requests/{{request_id}}/cancel", response_model=CancelResponse, tags=["queue"],
                summary=f"Cancel a {app_id} request")
    async def cancel(request_id: str, owner: str = Depends(get_owner)) -> Response:
        view = await api.lookup(request_id, owner)
        if view is None:
            return _not_found()
        outcome = await sched.cancel(view)
        return JSONResponse({"status": outcome}, status_code=202 if outcome == "CANCELLATION_REQUESTED" else 400)

    @router.post(f"/{app_id}", response_model=Output, tags=["run"], summary=f"Run {app_id} and wait for the result")
    async def run(request: Request, inp: Input = Body(...), owner: str = Depends(get_owner)) -> Response:
        try:
            view = await api.submit(request, inp, owner, None)
        except Invalid as exc:
            return invalid_response(exc)
        await view.final.wait()
        resp = await api.result_response(view, api.base(request))
        if view.status == COMPLETED and resp.status_code == 200:
            await sched.delivered(view)
        return resp

    @router.post(f"/{app_id}/stream", tags=["run"], summary=f"Run {app_id}, streaming status events, then the result")
    async def run_stream(request: Request, inp: Input = Body(...), owner: str = Depends(get_owner)) -> Response:
        try:
            view = await api.submit(request, inp, owner, None)
        except Invalid as exc:
            return invalid_response(exc)
        base = api.base(request)

        async def events():
            async for chunk in status_events(sched, view, api.urls(base, view.request_id), True, send_completed=False):
                yield chunk
            resp = await api.result_response(view, base)
            yield f"data: {resp.body.decode()}\n\n"
            if view.status == COMPLETED and resp.status_code == 200:
                await sched.delivered(view)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"x-fal-request-id": view.request_id, "Cache-Control": "no-cache"})

    return router
