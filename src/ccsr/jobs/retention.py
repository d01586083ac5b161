"""Retention: requests whose time has passed are deleted, rows, logs and files."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Optional

from ccsr.jobs.live import LiveJobs
from ccsr.jobs.store import JobStore
from ccsr.jobs.view import JobView
from ccsr.storage import BlobStoreError, keys

log = logging.getLogger("ccsr.jobs.retention")


class Retention:
    """Sweeps expired requests every ``interval`` seconds; ``await
    delete_file(ref)`` removes one stored file a request owns (missing files
    are fine). A request whose files the blob store could not delete keeps
    its row until a later sweep succeeds, so no file outlives its record."""

    def __init__(self, store: JobStore, live: LiveJobs, delete_file: Callable[[str], Awaitable[None]],
                 interval: float = 30.0):
        self.store = store
        self.live = live
        self.delete_file = delete_file
        self.interval = interval

    async def delivered(self, view: JobView, grace: float) -> None:
        """The result was handed to the client; with store_io off (the
        X-Fal-Store-IO: 0 header) it expires ``grace`` seconds from now."""
        if view.delivered_at is not None:
            return
        now = time.time()
        view.delivered_at = now
        expires = None
        if not view.store_io:
            expires = min(view.expires_at or now + grace, now + grace)
            view.expires_at = expires
        await asyncio.to_thread(self.store.mark_delivered, view.request_id, now, expires)

    async def sweep(self, now: Optional[float] = None) -> int:
        expired = await asyncio.to_thread(self.store.expired, now)
        for rec in expired:
            key = keys.input_ref_key(rec.input)  # normally gone when the request ended; a crash may have left it
            kept = False
            for f in list(rec.files) + ([keys.input_ref(key)] if key else []):
                try:
                    await self.delete_file(f)
                except BlobStoreError as exc:  # the store is down: the row waits for the next sweep
                    log.warning("deleting a file of %s failed (%s); kept for the next sweep", rec.request_id, exc)
                    kept = True
                except Exception:  # noqa: BLE001
                    log.exception("deleting %s failed", f)
            if kept:
                continue
            await asyncio.to_thread(self.store.delete, rec.request_id)
            self.live.forget_finished(rec.request_id)
        return len(expired)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001
                log.exception("retention sweep failed")
