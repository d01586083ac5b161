"""The server's side of its Ray connection: starts and watches the Ray driver
process (:mod:`ccsr.executors.ray_driver`) for the Ray executors of every
served app, and what happens when the Ray head goes away.

The server process never imports Ray: a process joined to a cluster is Ray's
to end when the head is lost (see the driver's docstring). Instead:

1. the link probes the head's GCS port every ``probe_interval``; once it
   refuses ``misses`` times in a row (or the driver process ends), every
   executor hears :meth:`Listener.on_lost` at once: its actors stop counting
   as ready (``/readyz`` answers 503) and the requests they ran go back to the
   queue, uncounted (:class:`~ccsr.executors.base.Interrupted`);
2. the driver process is killed (its actors could not outlive the head);
3. the link waits for the head's port to answer again (a private
   single-machine Ray, ``ray_address`` unset, is started anew at once),
   starts a new driver, gives it every app's actors again, and each executor
   hears :meth:`Listener.on_connected`: the queue moves again.

A head restarted faster than ``misses`` probes is not seen as lost here; its
actors' deaths are (the driver replaces them as for any lost actor).

One link per event loop (one server): its executors share one driver.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import socket
import threading
import weakref
from typing import Any, Optional, Protocol

from ccsr.executors.base import post_to_loop

log = logging.getLogger("ccsr.executors.ray")


class Listener(Protocol):
    """What the link asks of an executor; all called on the event loop thread."""

    key: str

    def driver_config(self) -> dict:
        """The pool this executor wants in the driver (``("add", key, config)``)."""

    def on_driver_message(self, msg: tuple) -> None:
        """A message of the driver about this executor's pool."""

    def on_lost(self, reason: str) -> None:
        """The cluster is gone: nothing runs until :meth:`on_connected`."""

    def on_connected(self) -> None:
        """A new driver holds this executor's pool again."""


def port_answers(address: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


class RayLink:
    """The driver process of one server and the watch on its head (see the
    module docstring). ``address``: the ``ray_address`` setting."""

    def __init__(self, address: Optional[str], *, probe_interval: float = 0.5, misses: int = 2,
                 retry_interval: float = 1.0, start_timeout: float = 180.0):
        self.address = address
        self.probe_interval = probe_interval
        self.misses = misses
        self.retry_interval = retry_interval
        self.start_timeout = start_timeout
        self.connected = False
        self.lost_reason = ""
        self.gcs_address: Optional[str] = None  # the head's GCS (host:port), from the driver
        self.listeners: dict[str, Listener] = {}
        self._generation = 0  # of the driver: messages of an older one are dropped
        self._proc: Any = None
        self._conn: Any = None
        self._watch: Optional[asyncio.Task] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._closing = False
        self._failed_starts = 0  # in a row, while reconnecting: the pause between tries grows

    # --- the executors --------------------------------------------------------------
    async def join(self, listener: Listener) -> None:
        self._loop = asyncio.get_running_loop()
        if self._proc is None and not self.lost_reason:
            await self._start_driver()  # the first driver: a failure stops the server's start
            self._watch = asyncio.create_task(self._watch_loop(), name="ccsr-ray-link")
        self.listeners[listener.key] = listener
        if self.connected:
            self.send(("add", listener.key, listener.driver_config()))

    async def leave(self, listener: Listener) -> None:
        if self.listeners.pop(listener.key, None) is not None and self.connected and self.listeners:
            self.send(("remove", listener.key))
        if self.listeners:
            return
        self._closing = True
        if self._watch is not None:
            self._watch.cancel()
        proc = self._proc
        if proc is not None:
            self.send(("close",))
            await asyncio.to_thread(proc.join, 20)  # the driver kills its actors, then leaves Ray
            if proc.is_alive():
                proc.kill()
        self._drop_driver()

    @property
    def driver_pid(self) -> Optional[int]:
        """The driver process's pid while one is connected."""
        return self._proc.pid if self._proc is not None and self.connected else None

    def send(self, msg: tuple) -> None:
        """To the driver; lost on the way when the driver has just died (its
        death is being handled: the executors hear on_lost)."""
        if self._conn is not None and self.connected:
            try:
                self._conn.send(msg)
            except (OSError, ValueError):
                pass

    # --- the driver process -----------------------------------------------------------
    def _target(self) -> Optional[str]:
        # Once the head's address is known, join it there again ("auto" reads
        # a file that may still name the dead cluster).
        return self.gcs_address if (self.address is not None and self.gcs_address) else self.address

    async def _start_driver(self) -> None:
        from ccsr.executors.ray_driver import driver_main

        ctx = mp.get_context("spawn")
        conn, child = ctx.Pipe()
        target = self._target()
        # daemon: ended with the server even when it exits without closing it
        proc = ctx.Process(target=driver_main, args=(child, target, logging.getLogger("ccsr").getEffectiveLevel()),
                           name="ccsr-ray-driver", daemon=True)
        proc.start()
        child.close()
        first = await asyncio.to_thread(_first_message, conn, self.start_timeout)
        if first is None or first[0] != "connected":
            proc.kill()
            conn.close()
            where = f"the Ray cluster at {target}" if target else "a local Ray"
            why = first[1] if first else f"the Ray driver process ended (exit code {proc.exitcode}) or did not answer"
            raise RuntimeError(f"ray_address: could not start or join {where}: {why}")
        self._generation += 1
        self._proc, self._conn, self.gcs_address = proc, conn, first[1]
        self.connected, self.lost_reason = True, ""
        gen = self._generation
        threading.Thread(target=self._read, args=(conn, gen), daemon=True, name="ccsr-ray-link-read").start()

    def _read(self, conn: Any, gen: int) -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                self._post(self._on_gone, gen)
                return
            self._post(self._on_message, gen, msg)

    def _post(self, fn, *args) -> None:  # noqa: ANN001
        post_to_loop(self._loop, fn, *args)

    def _on_message(self, gen: int, msg: tuple) -> None:
        if gen != self._generation or not self.connected:
            return
        listener = self.listeners.get(msg[1]) if len(msg) > 1 else None
        if listener is not None:
            listener.on_driver_message(msg)

    def _on_gone(self, gen: int) -> None:
        if gen == self._generation and self.connected and not self._closing:
            pid = self._proc.pid if self._proc is not None else "?"
            self._lose(f"the Ray driver process (pid {pid}) ended")

    def _drop_driver(self) -> None:
        self.connected = False
        self._generation += 1
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    # --- watching the head ------------------------------------------------------------
    async def _watch_loop(self) -> None:
        missed = 0
        while not self._closing:
            pause = self.retry_interval * 2 ** min(self._failed_starts, 5)  # a driver that keeps failing: up to 32x
            await asyncio.sleep(self.probe_interval if self.connected else pause)
            if self.connected:
                ok = await asyncio.to_thread(port_answers, self.gcs_address or "", self.probe_interval * 2)
                missed = 0 if ok else missed + 1
                if missed >= self.misses and self.connected:
                    missed = 0
                    self._lose(f"the Ray head's GCS at {self.gcs_address} stopped answering")
            elif not self._closing:
                await self._reconnect()

    def _lose(self, reason: str) -> None:
        log.error("%s: running requests go back to the queue; reconnecting when the head is back", reason)
        self.lost_reason = reason
        self._drop_driver()  # first: nothing the old driver still sends counts
        for listener in list(self.listeners.values()):
            try:
                listener.on_lost(reason)
            except Exception:  # noqa: BLE001 - one executor must not keep the others from hearing it
                log.exception("an executor failed to handle the loss of the Ray cluster")

    async def _reconnect(self) -> None:
        target = self._target()
        if target is not None and not await asyncio.to_thread(port_answers, target, 1.0):
            return  # the head is not back yet
        try:
            await self._start_driver()
        except Exception as exc:  # noqa: BLE001 - try again at the next round
            self._failed_starts += 1
            log.warning("could not rejoin the Ray cluster yet: %s", exc)
            return
        self._failed_starts = 0
        if self._closing:
            return
        log.warning("rejoined the Ray cluster at %s; making the model actors again", self.gcs_address)
        for listener in list(self.listeners.values()):
            self.send(("add", listener.key, listener.driver_config()))
            listener.on_connected()


def _first_message(conn: Any, timeout: float) -> Optional[tuple]:
    if not conn.poll(timeout):
        return None
    try:
        return conn.recv()
    except (EOFError, OSError):
        return None


_LINKS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RayLink]" = weakref.WeakKeyDictionary()


async def join(address: Optional[str], listener: Listener) -> RayLink:
    """The running loop's link (made on first use, or again once every executor
    has left it), joined by ``listener``."""
    loop = asyncio.get_running_loop()
    link = _LINKS.get(loop)
    if link is None or link._closing:
        link = _LINKS[loop] = RayLink(address)
    elif link.address != address:
        raise RuntimeError(f"ray_address: this server is already joined to {link.address or 'a local Ray'}")
    await link.join(listener)
    return link
