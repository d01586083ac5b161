"""RayExecutor: the :class:`Executor` seam over one app's Ray actors.

The actors themselves are managed by an :class:`~ccsr.executors.ray_pool.ActorPool`
in the Ray driver process (:mod:`ccsr.executors.ray_driver`), which the
server starts and watches through :mod:`ccsr.executors.ray_link`; this
process never imports Ray, so losing the Ray head cannot take the server
down. This class is the server's side: it keeps the driver's view of each
actor (ready, failed, waiting, where), decides which free actor runs a task,
and turns the driver's messages into events on the event loop.

The job store stays the only queue: a task is handed over only when an actor
is free and each actor runs one task at a time, so priority, FIFO and queue
positions stay exact and nothing waits inside Ray. How many actors: a fixed
count, or the app's share of the cluster beside the other served apps
(:mod:`ccsr.executors.ray_plan`).

Endings: each submitted task ends with exactly one ``Done``, ``Failed`` or
``WorkerLost`` from the driver (a dead actor: the scheduler's retry-once rule
applies), or :class:`Interrupted` (back to the queue, uncounted) when the
actor was no longer free on arrival or when the Ray head was lost.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Optional, Sequence

from ccsr.executors import ray_link
from ccsr.executors.base import Done, Emit, Executor, Failed, Interrupted, Task, WorkerLost, WorkerState
from ccsr.executors.ray_plan import ActorDemand
from ccsr.settings import check_actor_options
from ccsr.storage import BlobStore

log = logging.getLogger("ccsr.executors.ray")


class RayExecutor(Executor):
    """One app's Ray actors, seen from the server (see the module docstring).

    ``peers``: the :class:`ActorDemand` of every app served beside this one
    on the cluster (this one's included): without a fixed ``workers`` the
    actors are this app's share of the cluster."""

    def __init__(
        self,
        settings: dict,
        *,
        address: Optional[str] = None,
        workers: Optional[int] = None,
        actor_options: Optional[dict] = None,
        app_ref: str,
        factory: Optional[str] = None,
        restart_delay: float = 1.0,
        rescan_interval: float = 2.0,
        watch_interval: float = 5.0,
        peers: Sequence[ActorDemand] = (),
        app_id: Optional[str] = None,
    ):
        self.settings = settings
        self.address = address
        self.workers = workers
        self.actor_options = check_actor_options(dict(actor_options or {}))
        self.app_ref = app_ref  # the app whose engine the actors build (one executor per app)
        self.app_id = app_id or app_ref  # for messages
        self.key = app_ref
        self.peers = list(peers)
        self.factory = factory  # "module:function" replacing the app's engine (tests, benchmarks)
        self.intervals = {"restart_delay": restart_delay, "rescan_interval": rescan_interval,
                          "watch_interval": watch_interval}
        self._emit: Optional[Emit] = None
        self._store_spec: dict = {}
        self._link: Optional[ray_link.RayLink] = None
        #: The driver's describe() of each actor, in slot order.
        self._slots: list[dict] = []
        #: Slot name -> the request this server gave it (the driver ends each one).
        self._tasks: dict[str, str] = {}
        self._lost = ""  # why the cluster is unreachable ("" while connected)
        self._reported = asyncio.Event()  # the driver has made this app's pool (its slots are known)
        #: How long start waits for that (the actors' model loads are not waited for).
        self.start_timeout = 120.0

    # --- Executor ---------------------------------------------------------------
    async def start(self, emit: Emit, blobs: BlobStore) -> None:
        self._emit = emit
        self._store_spec = blobs.spec()  # the driver opens the store from it (and gives a shared one to actors)
        self._link = await ray_link.join(self.address, self)
        self._lost = self._link.lost_reason
        if not self._lost:  # as with local workers: /readyz lists the actors once start returns
            try:
                async with asyncio.timeout(self.start_timeout):
                    await self._reported.wait()
            except TimeoutError:
                log.warning("%s: the Ray driver did not report its actors within %.0f s", self.app_id,
                            self.start_timeout)

    def idle_slots(self) -> int:
        return len(self._free())

    def submit(self, task: Task) -> None:
        free = self._free()
        if not free or self._link is None:
            raise RuntimeError("no idle actor")
        self._tasks[free[0]] = task.request_id
        self._link.send(("submit", self.key, free[0], task))

    def cancel(self, request_id: str) -> None:
        if request_id in self._tasks.values() and self._link is not None:
            self._link.send(("cancel", self.key, request_id))

    @property
    def ready(self) -> bool:
        return not self._lost and any(s.get("ready") for s in self._slots)

    def describe(self) -> list[dict]:
        out = []
        for s in self._slots:
            d = {**s, "busy": s["name"] in self._tasks}
            if self._lost:
                d.update(state="disconnected", ready=False, error=f"{self._lost}; reconnecting")
                d.pop("waiting_for", None)
            out.append(d)
        return out

    def unavailable(self) -> Optional[str]:
        if self._lost:
            return f"The Ray cluster is unreachable ({self._lost}); the server reconnects when the head is back."
        if any(s.get("ready") for s in self._slots):
            return None
        failed = next((s for s in self._slots if s.get("error")), None)
        if failed is not None:
            return f"No model actor of {self.app_id} is ready: {failed['name']} could not load the model ({failed['error']})."
        n = len(self._slots)
        waiting = next((s.get("waiting_for") for s in self._slots if s.get("waiting_for")), "a Ray node")
        return (f"No model actor of {self.app_id} is ready: {n} actor{'s' if n != 1 else ''} waiting for {waiting} "
                "(see /readyz and docs/scale-out.md).")

    def running(self) -> dict[str, int]:
        """request id -> pid of the actor process running it (tests kill it)."""
        pids = {s["name"]: s.get("pid") for s in self._slots}
        return {rid: pids[name] for name, rid in self._tasks.items() if pids.get(name)}

    def node_running(self, request_id: str) -> Optional[str]:
        """The Ray node id of the actor running ``request_id``."""
        nodes = {s["name"]: s.get("node_id") for s in self._slots}
        return next((nodes.get(name) for name, rid in self._tasks.items() if rid == request_id), None)

    async def close(self) -> None:
        if self._link is not None:
            await self._link.leave(self)

    # --- the link (on the event loop thread) ------------------------------------------
    def driver_config(self) -> dict:
        """This app's :class:`~ccsr.executors.ray_pool.ActorPool` arguments, and the store."""
        return {"settings": self.settings, "workers": self.workers, "actor_options": self.actor_options,
                "app_ref": self.app_ref, "app_id": self.app_id, "factory": self.factory, "peers": self.peers,
                "store": self._store_spec, **self.intervals}

    def on_driver_message(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "slots":
            self._slots = list(msg[2])
            self._reported.set()
        elif kind == "event":
            ev = msg[2]
            if isinstance(ev, (Done, Failed, WorkerLost)):
                self._end(ev.request_id)
            self._emit(ev)
        elif kind == "rejected":
            self._end(msg[2])
            self._emit(Interrupted(msg[2], "the model actor was no longer free when the request reached it; "
                                           "it goes back to the queue"))

    def on_lost(self, reason: str) -> None:
        """No actor is ready any more; the running requests go back to the queue."""
        self._lost = reason
        for rid in list(self._tasks.values()):
            self._emit(Interrupted(rid, f"the Ray cluster was lost while this request ran ({reason}); "
                                        "it goes back to the queue"))
        self._tasks.clear()
        for s in self._slots:
            self._emit(WorkerState(s["name"], False, reason))

    def on_connected(self) -> None:
        """A new driver is making this app's actors again (the slots it reports replace these)."""
        self._lost = ""
        self._slots = [{"name": s["name"], "executor": "ray", "state": "starting", "ready": False, "busy": False}
                       for s in self._slots]

    # --- helpers ---------------------------------------------------------------------
    def _free(self) -> list[str]:
        if self._lost:
            return []
        return [s["name"] for s in self._slots if s.get("ready") and s["name"] not in self._tasks]

    def _end(self, request_id: str) -> None:
        for name, rid in list(self._tasks.items()):
            if rid == request_id:
                del self._tasks[name]
