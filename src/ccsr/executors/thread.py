"""ThreadExecutor: runs an engine object in a thread of this process.

For quick tests of the queue with a fake engine, and for embedding the
service in a process that already holds a model. ``ccsr serve`` uses the
process-based :class:`ccsr.executors.pool.WorkerPool` instead.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Optional

from ccsr.apps.base import App
from ccsr.executors.base import Done, Emit, Event, Executor, Failed, Task
from ccsr.executors.worker import run_task
from ccsr.storage import BlobStore


class ThreadExecutor(Executor):
    """Runs ``engine`` in threads, ``slots`` at a time, for ``app`` (default:
    the built-in app the task names)."""

    def __init__(self, engine: Any, slots: int = 1, app: Optional[App] = None):
        self.app = app
        self.engine = engine
        self.slots = slots
        self._running: dict[str, threading.Event] = {}
        self._emit: Optional[Emit] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._blobs: Optional[BlobStore] = None

    async def start(self, emit: Emit, blobs: BlobStore) -> None:
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        self._blobs = blobs  # the same object: no spec needed in this process

    def idle_slots(self) -> int:
        return self.slots - len(self._running)

    def submit(self, task: Task) -> None:
        ev = threading.Event()
        self._running[task.request_id] = ev

        def post(e: Event) -> None:
            try:
                self._loop.call_soon_threadsafe(self._deliver, e)
            except RuntimeError:  # the loop closed during shutdown
                pass

        app = self.app
        if app is None:
            from ccsr.apps.registry import default_registry

            app = self.app = default_registry()[task.app_id]
        threading.Thread(target=run_task, args=(app, self.engine, self._blobs, task, ev, post), daemon=True).start()

    def _deliver(self, e: Event) -> None:
        if isinstance(e, (Done, Failed)):
            self._running.pop(e.request_id, None)
        self._emit(e)

    def cancel(self, request_id: str) -> None:
        ev = self._running.get(request_id)
        if ev is not None:
            ev.set()

    @property
    def ready(self) -> bool:
        return True

    async def close(self) -> None:
        for ev in self._running.values():
            ev.set()
