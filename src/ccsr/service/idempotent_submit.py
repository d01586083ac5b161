"""The ``Idempotency-Key`` header on submit: the HTTP side of
:mod:`ccsr.jobs.idempotency`.

Same key and same body (the validated input, the webhook URL and the route)
within ``idempotency_ttl`` return the first request (same ``request_id``,
same URLs); the same key with a different body is a 422 naming the header;
a submit arriving while the first with its key is still being created waits
for it briefly, then answers 409. Keys are per API key (owner).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any, Awaitable, Callable, Optional

from starlette.requests import Request

from ccsr.jobs.idempotency import CONFLICT, NEW, PENDING, REPLAY, IdempotencyStore
from ccsr.jobs.scheduler import JobView
from ccsr.service.guards import RequestProblem

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
PENDING_WAIT = 10.0


def fingerprint(path: str, inp: Any, webhook: Optional[str]) -> str:
    """A digest of what makes two submits "the same request"."""
    body = inp.model_dump(mode="json") if hasattr(inp, "model_dump") else inp
    text = json.dumps({"path": path, "input": body, "webhook": webhook}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _key_of(request: Request) -> Optional[str]:
    raw = request.headers.get(HEADER.lower())
    if raw is None:
        return None
    key = raw.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise RequestProblem(("header", HEADER), f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    return key


async def submit_once(request: Request, owner: str, inp: Any, webhook: Optional[str],
                      submit: Callable[[], Awaitable[JobView]]) -> JobView:
    """``submit()``, or the request an earlier submit with the same key made."""
    key = _key_of(request)
    store: Optional[IdempotencyStore] = getattr(request.app.state, "idempotency", None)
    if key is None or store is None:
        return await submit()
    scheduler = request.app.state.scheduler
    print_ = fingerprint(request.url.path, inp, webhook)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PENDING_WAIT
    while True:
        claim = await asyncio.to_thread(store.claim, owner, key, print_)
        if claim.outcome == CONFLICT:
            raise RequestProblem(("header", HEADER), "was already used with a different request body "
                                 "(keys are kept for the setting idempotency_ttl)")
        if claim.outcome == REPLAY:
            view = await scheduler.get(claim.request_id)
            if view is not None and view.owner == owner:
                return view
            await asyncio.to_thread(store.release, owner, key)  # the request is gone: start afresh
            continue
        if claim.outcome == NEW:
            try:
                view = await submit()
            except BaseException:
                await asyncio.to_thread(store.release, owner, key)
                raise
            await asyncio.to_thread(store.complete, owner, key, view.request_id)
            return view
        assert claim.outcome == PENDING
        if loop.time() > deadline:
            raise RequestProblem(("header", HEADER), "a request with this key is still being submitted; retry",
                                 status=409, kind="conflict")
        await asyncio.sleep(0.05)
