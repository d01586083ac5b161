"""The threads blob-store calls of the HTTP process run in: a bounded pool of
their own.

Blob calls block (boto3, file I/O), so async code runs them in threads. On
asyncio's default pool they shared a handful of threads with the database
calls: during an S3 stall every thread waited on S3 and a status lookup that
needs only the database waited with them. Here each dependency has its own
bounded pool (the database keeps the loop's default one, sized by
``db_threads``), so a stalled store can hold up only the routes that need its
bytes, and while the store is known to be down a call fails at once
(:class:`~ccsr.storage.base.StoreUnavailable`) instead of queueing behind
stalled ones.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, TypeVar

from ccsr.storage.base import BlobStore, StoreUnavailable

T = TypeVar("T")

#: Threads of a pool made without a size (a FileStore outside the service).
DEFAULT_THREADS = 8


class BlobPool:
    """Runs blob-store calls of ``blobs`` in at most ``threads`` threads, and
    the store's periodic check in one more (so a full pool cannot delay it)."""

    def __init__(self, blobs: BlobStore, threads: int = DEFAULT_THREADS):
        self.blobs = blobs
        self.threads = threads
        self._calls: Optional[ThreadPoolExecutor] = None  # made on first use, again after close()
        self._checks: Optional[ThreadPoolExecutor] = None
        self._checking = False

    def _pools(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        if self._calls is None or self._checks is None:
            self._calls = ThreadPoolExecutor(self.threads, thread_name_prefix="ccsr-blob")
            self._checks = ThreadPoolExecutor(1, thread_name_prefix="ccsr-blob-check")
        return self._calls, self._checks

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a pool thread; StoreUnavailable at once
        while the store is down (the periodic check brings it back), also for
        a call still waiting for a thread when the store went down."""
        health = self.blobs.health
        if not health.ok:
            raise StoreUnavailable()

        def call() -> T:
            if not health.ok:  # went down while this call waited for a thread
                raise StoreUnavailable()
            return fn(*args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self._pools()[0], call)

    async def check(self, key: str) -> bool:
        """Look at the store once (:meth:`BlobStore.probe`); True when it
        answered. A check still waiting on a stalled store is not doubled."""
        if self._checking:
            return self.blobs.health.ok
        self._checking = True
        mark = self.blobs.health.mark()
        try:
            await asyncio.get_running_loop().run_in_executor(self._pools()[1], self.blobs.probe, key)
            self.blobs.health.up(mark)  # a store that reports nothing itself (local) is up when it answers
            return True
        except Exception as exc:  # noqa: BLE001 - StoreUnavailable, or anything a broken store raises
            self.blobs.health.down(f"check failed: {type(exc).__name__}")
            return False
        finally:
            self._checking = False

    def close(self) -> None:
        """Let the threads go (the service stops): calls still queued are
        cancelled, those waiting on the store end with their timeouts; a
        later call starts new threads."""
        calls, checks, self._calls, self._checks = self._calls, self._checks, None, None
        for pool in (calls, checks):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
