"""Queue and run routes of the "fal-ai/ccsr" app, per docs/fal-protocol.md.

    POST /queue/fal-ai/ccsr                          submit
    GET  /queue/fal-ai/ccsr/requests/{id}/status     status (?logs=1|0|true|false)
    GET  /queue/fal-ai/ccsr/requests/{id}/status/stream   the same as Server-Sent Events
    GET  /queue/fal-ai/ccsr/requests/{id}            result
    PUT  /queue/fal-ai/ccsr/requests/{id}/cancel     cancel
    POST /fal-ai/ccsr                                run and wait (sync)

Status polling is served from the scheduler's memory; it never waits for the
database while a request is queued or running.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any, Optional

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ccsr.errors import InvalidParameter
from ccsr.jobs.models import COMPLETED, PRIORITY_LOW, PRIORITY_NORMAL, QUEUED, RUNNING
from ccsr.jobs.scheduler import JobView, Scheduler, iso, validation_body
from ccsr.params import check_request
from ccsr.service.auth import get_owner
from ccsr.service.schemas import APP_ID, CancelResponse, absolute_file_urls, CCSRInput, CCSROutput, QueueStatus, SubmitResponse, params_of
from ccsr.service.storage import lifecycle_ttl, public_base_url
from ccsr.service.idempotent_submit import submit_once
from ccsr.service.submit_checks import check_submitted_input
from ccsr.settings import Settings

#: Comment lines keep idle SSE connections (and proxies) alive.
SSE_KEEPALIVE = 10.0
_PROTOCOL_STATUS = {QUEUED: "IN_QUEUE", RUNNING: "IN_PROGRESS"}
_LEVELS = {"STDERR", "STDOUT", "ERROR", "INFO", "WARN", "DEBUG"}


def _truthy(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def request_urls(base: str, request_id: str) -> dict:
    root = f"{base}/queue/{APP_ID}/requests/{request_id}"
    return {"response_url": root, "status_url": root + "/status", "cancel_url": root + "/cancel"}


class QueueAPI:
    """The routes, bound to one scheduler and settings."""

    def __init__(self, scheduler: Scheduler, settings: Settings):
        self.scheduler = scheduler
        self.settings = settings

    # --- bodies ---------------------------------------------------------------------
    def base(self, request: Request) -> str:
        return public_base_url(request, self.settings)

    async def status_body(self, view: JobView, base: str, with_logs: bool) -> dict:
        status = _PROTOCOL_STATUS.get(view.status, "COMPLETED")
        body: dict[str, Any] = {"status": status, "request_id": view.request_id, **request_urls(base, view.request_id)}
        body["queue_position"] = self.scheduler.queue_position(view) if view.status == QUEUED else None
        if with_logs and view.status != QUEUED:
            logs = await self.scheduler.logs_of(view)
            body["logs"] = [
                {"message": l.message, "level": l.level if l.level in _LEVELS else "INFO", "source": "USER",
                 "timestamp": iso(l.timestamp)}
                for l in logs
            ]
        else:
            body["logs"] = None
        body["metrics"] = {}
        if status == "COMPLETED":
            if view.inference_time is not None:
                body["metrics"]["inference_time"] = view.inference_time
            if view.status != COMPLETED:
                body["error"] = view.error
                body["error_type"] = view.error_type
        body["progress"] = round(view.progress, 4)
        return body

    async def status_response(self, view: JobView, base: str, with_logs: bool) -> Response:
        """The status as a response, rendered once per change of the request.

        A hundred clients polling one running request at 10 Hz then cost a
        dictionary lookup each, not a JSON rendering of every log line."""
        key = (view.version, self.scheduler.queue_version if view.status == QUEUED else -1, base)
        hit = view.status_cache.get(with_logs)
        if hit is None or hit[0] != key:
            body = await self.status_body(view, base, with_logs)
            data = json.dumps(body, separators=(",", ":")).encode()
            code = 200 if body["status"] == "COMPLETED" else 202
            hit = (key, data, code)
            view.status_cache[with_logs] = hit
        return Response(hit[1], status_code=hit[2], media_type="application/json")

    async def lookup(self, request_id: str, owner: str) -> Optional[JobView]:
        """The request if it exists and belongs to ``owner``; else None (both answer 404)."""
        view = await self.scheduler.get(request_id)
        if view is None or view.owner != owner:
            return None
        return view

    def result_response(self, view: JobView, base: str) -> Response:
        headers = {"x-fal-request-id": view.request_id}
        if view.status == COMPLETED and view.result is not None:
            return JSONResponse(absolute_file_urls(view.result, base), headers=headers)
        if view.status == COMPLETED:  # delivered with X-Fal-Store-IO: 0 and then forgotten
            return JSONResponse({"detail": "The result is no longer stored."}, status_code=404, headers=headers)
        headers["x-fal-error-type"] = view.error_type or "internal_server_error"
        if view.error_type == "request_timeout":
            headers["x-fal-request-timeout-type"] = "user"
        body = view.error_body or {"detail": view.error, "error_type": view.error_type}
        return JSONResponse(body, status_code=view.error_status or 500, headers=headers)

    # --- submit ------------------------------------------------------------------------
    async def submit(self, request: Request, inp: Any, owner: str, webhook: Optional[str]) -> JobView:
        params = params_of(inp)
        try:  # cross-field rules that do not need the image: fail fast with a 422
            check_request(params, 1, 1, math.inf)
        except InvalidParameter as exc:
            raise _Invalid(exc.field, exc.message) from None
        await check_submitted_input(inp, params, self.settings)  # data URIs: size, base64, image header (422)
        headers = request.headers
        prio = headers.get("x-fal-queue-priority", "normal").strip().lower()
        if prio not in ("normal", "low"):
            raise _Invalid("X-Fal-Queue-Priority", f"must be 'normal' or 'low', got {prio!r}", loc="header")
        timeout = None
        raw_timeout = headers.get("x-fal-request-timeout")
        if raw_timeout:
            try:
                timeout = float(raw_timeout)
                if not (timeout > 0 and math.isfinite(timeout)):
                    raise ValueError
            except ValueError:
                raise _Invalid("X-Fal-Request-Timeout", f"must be a positive number of seconds, got {raw_timeout!r}",
                               loc="header") from None
        store_io = headers.get("x-fal-store-io", "1").strip() not in ("0", "false", "False")
        ttl = lifecycle_ttl(request, None)
        return await self.scheduler.submit(
            inp.model_dump(mode="json"),
            owner=owner,
            priority=PRIORITY_LOW if prio == "low" else PRIORITY_NORMAL,
            base_url=self.base(request),
            webhook_url=webhook,
            start_timeout=timeout,
            ttl=ttl,
            store_io=store_io,
        )


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


class _Invalid(Exception):
    def __init__(self, field: str, message: str, loc: str = "body"):
        self.field, self.message, self.loc = field, message, loc


def invalid_response(exc: _Invalid) -> JSONResponse:
    body = validation_body(exc.field, exc.message)
    body["detail"][0]["loc"][0] = exc.loc
    return JSONResponse(body, status_code=422)


def queue_router(api: QueueAPI) -> APIRouter:
    router = APIRouter()
    sched = api.scheduler

    async def status_events(view: JobView, base: str, with_logs: bool, *, send_completed: bool = True):
        """SSE ``data:`` lines, one per status change, and a comment every
        SSE_KEEPALIVE seconds of silence; ends at COMPLETED (sent only when
        ``send_completed``: the run stream sends the result instead)."""
        last = None
        while True:
            state = view.status
            body = await api.status_body(view, base, with_logs)
            if body["status"] == "COMPLETED" and not send_completed:
                return
            text = json.dumps(body)
            if text != last:
                yield f"data: {text}\n\n"
                last = text
            if body["status"] == "COMPLETED":
                return
            waits = [asyncio.ensure_future(view.changed.wait())]
            if view.status == QUEUED:
                waits.append(asyncio.ensure_future(sched.queue_changed.wait()))
            done, pending = await asyncio.wait(waits, timeout=SSE_KEEPALIVE, return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()
            if not done:
                yield ": keep-alive\n\n"
            elif state == view.status == RUNNING:
                await asyncio.sleep(0.05)  # coalesce bursts of log lines; a new status goes out at once

    def _not_found() -> JSONResponse:
        return JSONResponse({"detail": "Request not found."}, status_code=404)

    # -- submit ---------------------------------------------------------------------------
    async def _submit(request: Request, inp: CCSRInput, owner: str, fal_webhook: Optional[str]) -> Response:  # type: ignore[valid-type]
        if fal_webhook is not None:
            problem = check_webhook_url(fal_webhook)
            if problem:
                return invalid_response(_Invalid("fal_webhook", problem, loc="query"))
        try:  # Idempotency-Key: a retried submit returns the first request
            view = await submit_once(request, owner, inp, fal_webhook, lambda: api.submit(request, inp, owner, fal_webhook))
        except _Invalid as exc:
            return invalid_response(exc)
        base = api.base(request)
        body = {"request_id": view.request_id, **request_urls(base, view.request_id),
                "queue_position": sched.queue_position(view) if view.status == QUEUED else 0}
        return JSONResponse(body, headers={"x-fal-request-id": view.request_id})

    @router.post(f"/queue/{APP_ID}", response_model=SubmitResponse, tags=["queue"], summary="Submit a request")
    async def submit(request: Request, inp: CCSRInput = Body(...), owner: str = Depends(get_owner),  # type: ignore[valid-type]
                     fal_webhook: Optional[str] = Query(None, description="URL to POST the result to")) -> Response:
        return await _submit(request, inp, owner, fal_webhook)

    @router.post(f"/queue/{APP_ID}/{{subpath:path}}", include_in_schema=False)
    async def submit_subpath(subpath: str, request: Request, inp: CCSRInput = Body(...),  # type: ignore[valid-type]
                             owner: str = Depends(get_owner), fal_webhook: Optional[str] = Query(None)) -> Response:
        return await _submit(request, inp, owner, fal_webhook)

    # -- status -----------------------------------------------------------------------------
    @router.get(f"/queue/{APP_ID}/requests/{{request_id}}/status", response_model=QueueStatus, tags=["queue"],
                summary="Status of a request")
    async def status(request_id: str, request: Request, logs: Optional[str] = Query(None),
                     owner: str = Depends(get_owner)) -> Response:
        view = await api.lookup(request_id, owner)
        if view is None:
            return _not_found()
        return await api.status_response(view, api.base(request), _truthy(logs))

    @router.get(f"/queue/{APP_ID}/requests/{{request_id}}/status/stream", tags=["queue"],
                summary="Status updates as Server-Sent Events", response_class=StreamingResponse)
    async def status_stream(request_id: str, request: Request, logs: Optional[str] = Query(None),
                            owner: str = Depends(get_owner)) -> Response:
        view = await api.lookup(request_id, owner)
        if view is None:
            return _not_found()
        base, with_logs = api.base(request), _truthy(logs)

        return StreamingResponse(status_events(view, base, with_logs), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                          "x-fal-request-id": view.request_id})

    # -- result -----------------------------------------------------------------------------
    @router.get(f"/queue/{APP_ID}/requests/{{request_id}}", response_model=CCSROutput, tags=["queue"],
                summary="Result of a request")
    async def result(request_id: str, request: Request, owner: str = Depends(get_owner)) -> Response:
        view = await api.lookup(request_id, owner)
        if view is None:
            return _not_found()
        if not view.finished:
            state = "in queue" if view.status == QUEUED else "in progress"
            return JSONResponse({"detail": f"Request is still {state}."}, status_code=400,
                                headers={"x-fal-request-id": view.request_id})
        resp = api.result_response(view, api.base(request))
        if view.status == COMPLETED and resp.status_code == 200:
            await sched.delivered(view)
        return resp

    # -- cancel -----------------------------------------------------------------------------
    @router.put(f"/queue/{APP_ID}/requests/{{request_id}}/cancel", response_model=CancelResponse, tags=["queue"],
                summary="Cancel a request")
    async def cancel(request_id: str, owner: str = Depends(get_owner)) -> Response:
        view = await api.lookup(request_id, owner)
        if view is None:
            return _not_found()
        outcome = await sched.cancel(view)
        return JSONResponse({"status": outcome}, status_code=202 if outcome == "CANCELLATION_REQUESTED" else 400)

    # -- sync run ---------------------------------------------------------------------------
    async def _run(request: Request, inp: Any, owner: str) -> Response:
        try:
            view = await api.submit(request, inp, owner, None)
        except _Invalid as exc:
            return invalid_response(exc)
        await view.final.wait()
        resp = api.result_response(view, api.base(request))
        if view.status == COMPLETED and resp.status_code == 200:
            await sched.delivered(view)
        return resp

    @router.post(f"/{APP_ID}", response_model=CCSROutput, tags=["run"], summary="Run and wait for the result")
    async def run(request: Request, inp: CCSRInput = Body(...), owner: str = Depends(get_owner)) -> Response:  # type: ignore[valid-type]
        return await _run(request, inp, owner)

    @router.post(f"/{APP_ID}/stream", tags=["run"], summary="Run, streaming status events, then the result")
    async def run_stream(request: Request, inp: CCSRInput = Body(...), owner: str = Depends(get_owner)) -> Response:  # type: ignore[valid-type]
        try:
            view = await api.submit(request, inp, owner, None)
        except _Invalid as exc:
            return invalid_response(exc)
        base = api.base(request)

        async def events():
            async for chunk in status_events(view, base, True, send_completed=False):
                yield chunk
            resp = api.result_response(view, base)
            yield f"data: {resp.body.decode()}\n\n"
            if view.status == COMPLETED:
                await sched.delivered(view)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"x-fal-request-id": view.request_id, "Cache-Control": "no-cache"})

    return router
