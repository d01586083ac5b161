"""ActorPool: one app's model actors on a Ray cluster, run inside the Ray
driver process (:mod:`ccsr.executors.ray_driver`; the server talks to it
through :class:`ccsr.executors.ray.RayExecutor`).

The job store stays the only queue: the server hands a task over only when
an actor is free, and each actor runs one task at a time, so priority, FIFO
and queue positions stay exact and nothing ever waits inside Ray. Ray only
places the actors (``num_gpus=1`` by default, or whatever
``ray_actor_options`` and the app's section ask for) and carries bytes. How
many actors: a fixed count, or the app's share of the cluster beside the
other served apps (:mod:`ccsr.executors.ray_plan`).

Failures: actors are created with ``max_restarts=0, max_task_retries=0``, so
Ray never re-runs anything behind the scheduler's back. A dead actor (killed
process, lost node: ``RayActorError`` and its subclasses ``ActorDiedError``
and ``ActorUnavailableError``) is reported as :class:`WorkerLost` for the task
it was running (the scheduler's retry-once rule applies), made sure of with
``ray.kill``, and replaced after a back-off. A model that fails to load is
reported as a :class:`WorkerState` and kept in :meth:`describe` (``/readyz``).

Threads: the Ray calls that block (waiting for an actor to load, following a
run's stream, watching an actor for death) run in small daemon threads that
only post to the event loop; all bookkeeping happens on the loop thread, and
``emit`` is only ever called there.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Optional, Sequence

import ray
from ray.exceptions import RayActorError, RayError, RayTaskError

from ccsr.executors.base import Done, Emit, Event, Executor, Failed, Task, WorkerLost, WorkerState, post_to_loop
from ccsr.executors.ray_actor import actor_class
from ccsr.executors.ray_plan import ActorDemand, need_of, plan_counts, shortfall
from ccsr.settings import check_actor_options
from ccsr.storage import BlobStore

log = logging.getLogger("ccsr.executors.ray")


def shares_blobs(spec: dict) -> bool:
    """Whether actors on other nodes can reach the store ``spec`` describes.

    A local store is a directory on the driver's machine that other nodes do
    not share; an S3-compatible store is reachable from every node.
    """
    return spec.get("kind") != "local"


class _Slot:
    """One actor and what it is doing; replaced actors bump ``generation``."""

    def __init__(self, name: str):
        self.name = name
        self.generation = 0
        self.handle: Any = None
        self.ready = False
        self.task: Optional[str] = None
        self.info: dict = {}
        self.error = ""
        self.failures = 0


class ActorPool(Executor):
    """One app's model actors (see the module docstring); Ray is already
    initialised in this process (the driver's job)."""

    def __init__(
        self,
        settings: dict,
        *,
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
        """``peers``: the :class:`ActorDemand` of every app served beside this
        one on the cluster (this one's included): without a fixed ``workers``,
        the actors are this app's share of the cluster (ccsr.executors.ray_plan)."""
        self.settings = settings
        self.workers = workers
        self.actor_options = check_actor_options(dict(actor_options or {}))
        self.app_ref = app_ref  # the app whose engine the actors build (one executor per app)
        self.app_id = app_id or app_ref  # for messages
        self.peers = list(peers)
        self.factory = factory  # "module:function" replacing the app's engine (tests, benchmarks)
        self.restart_delay = restart_delay
        self.rescan_interval = rescan_interval
        self.watch_interval = watch_interval
        self.slots: list[_Slot] = []
        self._emit: Optional[Emit] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._blobs: Optional[BlobStore] = None
        self._actor_store: Optional[dict] = None  # the spec actors open, when they can reach the store
        self._cls: Any = None
        self._closing = False
        self._rescan: Optional[asyncio.Task] = None

    # --- Executor ---------------------------------------------------------------
    async def start(self, emit: Emit, blobs: BlobStore) -> None:
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        self._blobs = blobs
        spec = blobs.spec()
        # A shared store's spec goes to each actor once, when it is made; with a
        # local one the bytes travel through Ray instead (see _payload).
        self._actor_store = spec if shares_blobs(spec) else None
        self._cls = actor_class()
        await asyncio.to_thread(self._check_fit)
        self._grow(await asyncio.to_thread(self._target_count))
        if self.workers is None:  # follow the cluster: a node that joins gets an actor
            self._rescan = asyncio.create_task(self._rescan_loop())

    def idle_slots(self) -> int:
        return sum(1 for s in self.slots if s.ready and s.task is None)

    def submit(self, task: Task) -> None:
        for s in self.slots:
            if self.submit_to(s.name, task):
                return
        raise RuntimeError("no idle actor")

    def submit_to(self, name: str, task: Task) -> bool:
        """Start ``task`` on the slot ``name`` if its actor is ready and idle."""
        s = next((s for s in self.slots if s.name == name), None)
        if s is None or not s.ready or s.task is not None:
            return False
        s.task = task.request_id
        threading.Thread(
            target=self._drive, args=(s, s.generation, s.handle, task), daemon=True, name=f"ccsr-{s.name}-run"
        ).start()
        return True

    def cancel(self, request_id: str) -> None:
        for s in self.slots:
            if s.task == request_id and s.handle is not None:
                try:
                    s.handle.cancel.remote(request_id)  # answered by the control group during the run
                except RayError:  # the actor is gone; its WorkerLost is on the way
                    pass

    @property
    def ready(self) -> bool:
        return any(s.ready for s in self.slots)

    def describe(self) -> list[dict]:
        out = []
        for s in self.slots:
            state = "ready" if s.ready else ("failed" if s.error else "starting")
            d = {
                "name": s.name,
                "executor": "ray",
                "state": state,
                "ready": s.ready,
                "busy": s.task is not None,
                "device": s.info.get("device"),
                "pid": s.info.get("pid"),
                "node_id": s.info.get("node_id"),
                "node_ip": s.info.get("node_ip"),
            }
            if s.error and not s.ready:
                d["error"] = s.error
            if state == "starting":
                d["waiting_for"] = f"a node with {self._wanted()} free, then the model load"
            out.append(d)
        return out

    async def close(self) -> None:
        self._closing = True
        if self._rescan is not None:
            self._rescan.cancel()
        for s in self.slots:
            self._kill(s)

    # --- actors -------------------------------------------------------------------
    def _wanted(self) -> str:
        o = self.actor_options
        parts = [f"GPU:{o['num_gpus']}"] if o.get("num_gpus") else []
        parts += [f"{k}:{v}" for k, v in (o.get("resources") or {}).items()]
        return ", ".join(parts) or "a CPU"

    def _demands(self) -> list[ActorDemand]:
        """Every served app's demand, this one's from its own options."""
        own = ActorDemand(self.app_ref, need_of(self.actor_options), self.workers)
        return [own if d.key == own.key else d for d in self.peers] if any(
            d.key == own.key for d in self.peers) else [*self.peers, own]

    def _target_count(self) -> int:
        """``workers`` if set, else this app's share of the cluster's resources."""
        if self.workers is not None:
            return self.workers
        return plan_counts(ray.cluster_resources(), self._demands())[self.app_ref]

    def _check_fit(self) -> None:
        """Say at start when the cluster cannot hold one actor of every app:
        the actors that do not fit wait in Ray (and /readyz stays 503)."""
        demands = self._demands()
        if demands[0].key != self.app_ref:
            return  # the first app's executor says it for all
        short = shortfall(ray.cluster_resources(), demands)
        if short:
            log.warning("%s: the Ray cluster cannot hold the actors of every served app (%s); actors that do not "
                        "fit wait for a node to join. Otherwise set the apps' ray_num_gpus / ray_resources / "
                        "ray_actors, or serve fewer apps (apps).", self.app_id, short)

    def _grow(self, n: int) -> None:
        while len(self.slots) < n and not self._closing:
            s = _Slot(f"actor-{len(self.slots)}")
            self.slots.append(s)
            self._spawn(s)

    async def _rescan_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.rescan_interval)
            try:
                self._grow(await asyncio.to_thread(self._target_count))
            except Exception:  # noqa: BLE001 - the GCS may be briefly unreachable
                log.warning("could not read the cluster's resources", exc_info=True)

    def _spawn(self, s: _Slot) -> None:
        if self._closing:
            return
        s.generation += 1
        s.ready, s.task, s.info = False, None, {}
        options = {**self.actor_options, "max_restarts": 0, "max_task_retries": 0}
        s.handle = self._cls.options(**options).remote(self.app_ref, self.factory, self.settings,
                                                       str(self.settings.get("device") or "auto"), self._actor_store)
        threading.Thread(
            target=self._watch, args=(s, s.generation, s.handle), daemon=True, name=f"ccsr-{s.name}-watch"
        ).start()

    def _kill(self, s: _Slot) -> None:
        if s.handle is not None:
            try:
                ray.kill(s.handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead or Ray shut down
                pass

    def _watch(self, s: _Slot, gen: int, handle: Any) -> None:
        """Wait for the model load, then block on ``watch`` calls until the actor dies."""
        try:
            info = ray.get(handle.info.remote())
        except SystemExit:  # ray.shutdown (close): nothing left to report
            return
        except Exception as exc:  # noqa: BLE001 - creation failed or the actor died while loading
            self._post(self._on_dead, s, gen, _describe_death(exc))
            return
        self._post(self._on_info, s, gen, info)
        if not info.get("ready"):
            return
        while not self._closing and s.generation == gen:
            try:
                ray.get(handle.watch.remote(self.watch_interval))
            except SystemExit:  # as above
                return
            except Exception as exc:  # noqa: BLE001
                if not self._closing:
                    self._post(self._on_dead, s, gen, _describe_death(exc))
                return

    def _drive(self, s: _Slot, gen: int, handle: Any, task: Task) -> None:
        """Send ``task`` to the actor and forward its stream to the loop."""
        rid = task.request_id
        ended = False
        broken: Optional[str] = None  # set when the result could not be stored here
        try:
            stream = handle.run.remote(self._payload(task))
            for ref in stream:
                kind, value = ray.get(ref)
                if kind == "result":
                    try:
                        data, content_type = value  # the result of a store the actor cannot reach
                        self._blobs.put(task.output_key, data, content_type=content_type)
                    except Exception as exc:  # noqa: BLE001 - disk or S3 error
                        broken = f"Could not write the result: {exc}"
                    continue
                for ev in value:
                    if isinstance(ev, (Done, Failed)):
                        ended = True
                        if broken is not None and isinstance(ev, Done):
                            ev = Failed(rid, "error", broken)
                    self._post(self._on_event, s, gen, ev)
            if not ended:
                self._post(self._on_event, s, gen, Failed(rid, "error", "the model actor ended the run without a result"))
        except RayActorError as exc:  # ActorDiedError, ActorUnavailableError: the actor or its node is gone
            self._post(self._on_dead, s, gen, _describe_death(exc))
        except RayTaskError as exc:  # the run itself raised (not the engine: run_task catches those)
            self._post(self._on_event, s, gen, Failed(rid, "error", f"the model actor failed: {exc.cause or exc}"))
        except RayError as exc:  # the stream's objects were lost with their node
            self._post(self._on_dead, s, gen, _describe_death(exc))
        except (OSError, KeyError) as exc:  # the prepared input could not be read
            self._post(self._on_event, s, gen, Failed(rid, "error", f"Could not read the prepared input: {exc}"))
        except SystemExit:  # ray.shutdown (close)
            pass

    def _payload(self, task: Task) -> dict:
        """What crosses to the actor for ``task``: the task (blob keys) alone when
        the actor reaches the store, plus the input's bytes when it does not."""
        if self._actor_store is not None:
            return {"task": task, "input": None}
        return {"task": task, "input": self._blobs.read(task.input_key)}

    def _post(self, fn, *args) -> None:  # noqa: ANN001
        post_to_loop(self._loop, fn, *args)

    # --- on the loop thread ---------------------------------------------------------
    def _on_info(self, s: _Slot, gen: int, info: dict) -> None:
        if gen != s.generation or self._closing:
            return
        s.info = info
        if info.get("ready"):
            s.ready, s.failures, s.error = True, 0, ""
            log.info("%s ready on node %s (%s)", s.name, info.get("node_ip"), info.get("device"))
            self._emit(WorkerState(s.name, True, f"model loaded on {info.get('device')} at {info.get('node_ip')}"))
            return
        s.error = info.get("error") or "the model did not load"
        s.failures += 1
        log.error("%s could not load the model: %s", s.name, s.error)
        self._emit(WorkerState(s.name, False, s.error))
        self._kill(s)
        s.generation += 1  # what the old actor's threads still post is stale
        self._respawn_later(s)

    def _on_event(self, s: _Slot, gen: int, ev: Event) -> None:
        if gen != s.generation:  # from an actor already reported lost
            return
        if isinstance(ev, (Done, Failed)) and ev.request_id == s.task:
            s.task = None
        self._emit(ev)

    def _on_dead(self, s: _Slot, gen: int, message: str) -> None:
        if gen != s.generation or self._closing:
            return
        lost, was_ready = s.task, s.ready
        s.task, s.ready = None, False
        s.generation += 1  # the run and watch threads may both report this death: once is enough
        self._kill(s)  # "unavailable" may still be running: make sure it can't finish twice
        if lost is not None:
            log.error("%s lost while running %s: %s", s.name, lost, message)
            self._emit(WorkerLost(lost, f"the model actor on {s.info.get('node_ip', 'its node')} was lost ({message})"))
        if not was_ready:
            s.failures += 1
            s.error = message
            self._emit(WorkerState(s.name, False, message))
        else:
            s.failures = 0  # it had loaded: replace it at once
        self._respawn_later(s)

    def _respawn_later(self, s: _Slot) -> None:
        # Back off while actors keep dying or failing to load (bad weights, a flapping node).
        delay = min(30.0, self.restart_delay * 2 ** min(s.failures, 5))
        gen = s.generation
        self._loop.call_later(delay, lambda: gen == s.generation and self._spawn(s))


def _describe_death(exc: BaseException) -> str:
    """A one-line reason from a Ray error (their messages run to many lines)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:500]
