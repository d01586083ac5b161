"""The protocol's status body of a request, and its Server-Sent Events stream."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from ccsr.jobs.models import COMPLETED, QUEUED, RUNNING
from ccsr.jobs.scheduler import Scheduler
from ccsr.jobs.view import JobView

#: Comment lines keep idle SSE connections (and proxies) alive.
SSE_KEEPALIVE = 10.0
_PROTOCOL_STATUS = {QUEUED: "IN_QUEUE", RUNNING: "IN_PROGRESS"}
_LEVELS = {"STDERR", "STDOUT", "ERROR", "INFO", "WARN", "DEBUG"}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


async def status_body(sched: Scheduler, view: JobView, urls: dict, with_logs: bool) -> dict:
    """The status JSON: protocol state, URLs, queue position, logs, metrics."""
    status = _PROTOCOL_STATUS.get(view.status, "COMPLETED")
    body: dict[str, Any] = {"status": status, "request_id": view.request_id, **urls}
    body["queue_position"] = sched.queue_position(view) if view.status == QUEUED else None
    if with_logs and view.status != QUEUED:
        logs = await sched.logs_of(view)
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


async def status_events(sched: Scheduler, view: JobView, urls: dict, with_logs: bool, *,
                        send_completed: bool = True) -> AsyncIterator[str]:
    """SSE ``data:`` lines, one per status change, and a comment every
    SSE_KEEPALIVE seconds of silence; ends at COMPLETED (sent only when
    ``send_completed``: the run stream sends the result instead)."""
    last = None
    while True:
        state = view.status
        body = await status_body(sched, view, urls, with_logs)
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
            waits.append(asyncio.ensure_future(sched.queue_of(view).changed.wait()))
        done, pending = await asyncio.wait(waits, timeout=SSE_KEEPALIVE, return_when=asyncio.FIRST_COMPLETED)
        for p in pending:
            p.cancel()
        if not done:
            yield ": keep-alive\n\n"
        elif state == view.status == RUNNING:
            await asyncio.sleep(0.05)  # coalesce bursts of log lines; a new status goes out at once
