"""The ``Idempotency-Key`` header on submit: the HTTP side of
:mod:`ccsr.jobs.idempotency`.

Same key and same body (the validated input, the webhook URL and the route)
within ``idempotency_ttl`` return the first request (same ``request_id``,
same URLs); the same key with a different body is a 422 naming the header;
a submit arriving while the first with its key is still being created waits
for it briefly, then answers 409. Keys are per API key (owner).

While its submit runs, the server holding a key renews the key's sign of
life every quarter of ``idempotency_pending_timeout``: a slow submit keeps its
key, and the key of a submit whose server was killed (kill -9) is free again
that many seconds later instead of answering 409 for ``idempotency_ttl``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any, Awaitable, Callable, Optional

from starlette.requests import Request

from ccsr.jobs.idempotency import CONFLICT, NEW, PENDING, REPLAY, IdempotencyStore
from ccsr.jobs.scheduler import JobView
from ccsr.service.guards import RequestProblem

log = logging.getLogger("ccsr.service.idempotent_submit")

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
            keeper = asyncio.create_task(_keep_claim(store, owner, key, claim.token))
            try:
                view = await submit()
            except BaseException:
                keeper.cancel()
                await asyncio.to_thread(store.release, owner, key, claim.token)
                raise
            keeper.cancel()
            if not await asyncio.to_thread(store.complete, owner, key, view.request_id, claim.token):
                log.warning("Idempotency-Key of request %s was taken over while it was submitted "
                            "(no sign of life for idempotency_pending_timeout)", view.request_id)
            return view
        assert claim.outcome == PENDING
        if loop.time() > deadline:
            raise RequestProblem(("header", HEADER), "a request with this key is still being submitted; retry "
                                 "(a submit that died frees its key after the setting idempotency_pending_timeout)",
                                 status=409, kind="conflict")
        await asyncio.sleep(0.05)


async def _keep_claim(store: IdempotencyStore, owner: str, key: str, token: Optional[str]) -> None:
    """Renew the claim's sign of life until cancelled (the submit ended)."""
    interval = store.pending_timeout / 4
    while True:
        await asyncio.sleep(interval)
        try:
            if not await asyncio.to_thread(store.renew, owner, key, token):
                return
        except Exception:  # noqa: BLE001 - a database hiccup: the next renewal may work
            log.warning("renewing an Idempotency-Key claim failed", exc_info=True)
