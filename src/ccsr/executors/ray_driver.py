"""The Ray driver: a child process of the server holding its connection to
the Ray cluster, with one :class:`~ccsr.executors.ray_pool.ActorPool` per
served app.

Why a process of its own: a process joined to a Ray cluster is Ray's to
end. When the head (its GCS) stays unreachable longer than
``gcs_rpc_server_reconnect_timeout_s`` (60 s by default) Ray ends the whole
process, and a Ray call still in flight when the connection is torn down
(``ray.shutdown``) may end it at once; a thread blocked in a GCS call when
the head died does the same once the deadline passes. The server has to
outlive its cluster, so it never joins Ray itself: it watches the head and,
when the head is lost, kills this process and starts a new one once the head
is back (:mod:`ccsr.executors.ray_link`). One driver serves every app of the
server: one Ray job, and one private single-machine Ray when ``ray_address``
is unset.

Messages, tuples over a ``multiprocessing`` pipe:

* server -> driver: ``("add", key, config)`` (an app's pool, config as
  :meth:`ccsr.executors.ray.RayExecutor.driver_config`), ``("submit", key,
  slot, task)``, ``("cancel", key, request_id)``, ``("remove", key)``,
  ``("close",)``;
* driver -> server: first ``("connected", gcs_address)`` or ``("error",
  message)``; then ``("slots", key, [describe dicts])`` whenever an app's
  actors change (always before an event), ``("event", key, event)`` and
  ``("rejected", key, request_id)`` (the slot was no longer free).

The driver ends when the server says so, or when the pipe closes (the server
died): its actors, owned by this job, go with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any, Optional

log = logging.getLogger("ccsr.executors.ray")

#: How often changed actor states are sent when no event carries them.
SYNC_INTERVAL = 0.2


def driver_main(conn: Any, address: Optional[str], log_level: int) -> None:
    """Entry point of the driver process (spawned by the server)."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_Driver(conn, address).run())
    finally:
        os._exit(0)  # Ray's atexit hooks would try a cluster that may be gone


class _Driver:
    def __init__(self, conn: Any, address: Optional[str]):
        self.conn = conn
        self.address = address
        self.pools: dict[str, Any] = {}
        self.sent: dict[str, list] = {}
        self.inbox: "asyncio.Queue[Optional[tuple]]" = asyncio.Queue()
        self.loop: Optional[asyncio.AbstractEventLoop] = None

    async def run(self) -> None:
        import ray

        self.loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(self._init)
        except Exception as exc:  # noqa: BLE001 - the server says which setting to look at
            self._send(("error", f"{type(exc).__name__}: {exc}"))
            return
        self._send(("connected", ray.get_runtime_context().gcs_address))
        threading.Thread(target=self._read, daemon=True, name="ccsr-driver-read").start()
        sync = asyncio.create_task(self._sync_loop())
        try:
            while True:
                msg = await self.inbox.get()
                if msg is None or msg[0] == "close":
                    break
                await self._handle(msg)
        finally:
            sync.cancel()
            for pool in self.pools.values():
                await pool.close()
            await asyncio.to_thread(ray.shutdown)

    def _init(self) -> None:
        import ray

        try:  # a thread that outlives the connection must fail, not join a cluster again on its own
            from ray._private import auto_init_hook

            auto_init_hook.enable_auto_connect = False
        except (ImportError, AttributeError):
            pass
        kwargs: dict = {"namespace": "ccsr", "log_to_driver": False}
        if self.address is None:
            kwargs["include_dashboard"] = False  # a private single-machine Ray
        ray.init(address=self.address, **kwargs)

    def _read(self) -> None:
        """Forward the server's messages to the loop; the pipe's end (the server
        died) ends the driver."""
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                msg = None
            self.loop.call_soon_threadsafe(self.inbox.put_nowait, msg)
            if msg is None or msg[0] == "close":
                return

    def _send(self, msg: tuple) -> None:
        try:
            self.conn.send(msg)
        except (OSError, ValueError):  # the server is gone; the reader ends the driver
            pass

    async def _handle(self, msg: tuple) -> None:
        from ccsr.executors.ray_pool import ActorPool
        from ccsr.storage import open_blob_store

        kind, key = msg[0], msg[1]
        if kind == "add":
            config = dict(msg[2])
            store = open_blob_store(config.pop("store"))
            pool = ActorPool(**config)
            self.pools[key] = pool
            try:
                await pool.start(lambda ev, key=key: self._emit(key, ev), store)
            except Exception:  # noqa: BLE001 - the cluster went away meanwhile; the server will notice
                log.exception("could not start the actors of %s", config.get("app_id"))
            self._sync(key)
            return
        pool = self.pools.get(key)
        if pool is None:
            return
        if kind == "submit":
            task = msg[3]
            if not pool.submit_to(msg[2], task):
                self._send(("rejected", key, task.request_id))
            self._sync(key)
        elif kind == "cancel":
            pool.cancel(msg[2])
        elif kind == "remove":
            del self.pools[key]
            await pool.close()

    def _emit(self, key: str, ev: Any) -> None:
        self._sync(key)  # the server sees a slot's new state before the event about it
        self._send(("event", key, ev))

    def _sync(self, key: str) -> None:
        pool = self.pools.get(key)
        if pool is None:
            return
        slots = pool.describe()
        if slots != self.sent.get(key):
            self.sent[key] = slots
            self._send(("slots", key, slots))

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            for key in list(self.pools):
                self._sync(key)
