"""The FastAPI application of ``ccsr serve``.

:func:`create_app` wires the pieces: the job store (SQLite or PostgreSQL), the
file store, the scheduler with its executor (model worker processes by
default), and the routes: queue/run, storage, health, metrics, and the edges
(webhook keys, proxy) when present. This process never imports torch.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Optional, Sequence, Union

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ccsr import web

from ccsr.apps.base import App
from ccsr.apps.registry import Registry, default_registry
from ccsr.executors.base import Executor
from ccsr.jobs.scheduler import Scheduler, SchedulerConfig
from ccsr.jobs.store import JobStore
from ccsr.service import hardening, store_check
from ccsr.service import docs_page
from ccsr.service.auth import KeyRing
from ccsr.service import proxy, webhooks
from ccsr.service.metrics import ServiceMetrics
from ccsr.service.ops_access import ops_allowed
from ccsr.service.outcomes import WebhookView
from ccsr.service.routes_queue import QueueAPI, queue_router
from ccsr.service.runtime import ServiceEdges
from ccsr.service.schemas import AppInfo, AppList
from ccsr.service.storage_routes import storage_router
from ccsr.service import weights_status
from ccsr.settings import Settings
from ccsr.storage import Storage

log = logging.getLogger("ccsr.service")


def worker_devices(settings: Settings) -> list[str]:
    if settings.workers:
        return [d.strip() for d in settings.workers.split(",") if d.strip()]
    return [settings.device]


def ray_demands(apps: Sequence[App], settings: Settings) -> list:
    """The Ray actors each of ``apps`` asks for (one cluster, shared: see
    ccsr.executors.ray_plan); pure arithmetic, ``ray`` is not imported."""
    from ccsr.executors.ray_plan import actor_options_for, demand_for

    out = []
    for a in apps:
        section = settings.section(a)
        out.append(demand_for(a.ref, actor_options_for(settings.ray_actor_options, section), section,
                              settings.ray_workers))
    return out


def worker_pool(app: App, settings: Settings, factory: Optional[str] = None, peers: Sequence = ()) -> Executor:
    """The default executor of an app: its model worker processes, one per
    device, or with executor=ray its Ray actors (one RayExecutor per app;
    ``peers``: :func:`ray_demands` of every app served on the cluster)."""
    wsettings = app.worker_settings(settings)  # the shared engine options and the model's own section
    if settings.executor == "ray":  # Ray itself runs in the executor's driver process, never here
        from ccsr.executors.ray import RayExecutor
        from ccsr.executors.ray_plan import actor_options_for

        section = settings.section(app)
        count = section.ray_actors if section.ray_actors is not None else settings.ray_workers
        return RayExecutor(wsettings, address=settings.ray_address, workers=count,
                           actor_options=actor_options_for(settings.ray_actor_options, section), app_ref=app.ref,
                           factory=factory, peers=list(peers) or ray_demands([app], settings), app_id=app.app_id)
    from ccsr.executors.pool import WorkerPool

    return WorkerPool(wsettings, worker_devices(settings), app_ref=app.ref, factory=factory,
                      batch_size=settings.batch_size if app.batches else 1, batch_wait=settings.batch_wait)


def servable(registry: Registry, settings: Settings) -> Registry:
    """The apps a server not told its apps serves: those whose
    ``serve_by_default`` says yes (CCSR-v2 only when its weights are found)."""
    kept = []
    for a in registry:
        if a.serve_by_default(settings.section(a)):
            kept.append(a)
        else:
            log.info("%s is not served: its weights were not found (set CCSR_APPS to serve it anyway)", a.app_id)
    return Registry(kept)


def create_app(
    settings: Optional[Settings] = None,
    *,
    registry: Optional[Registry] = None,
    executors: Optional[dict[str, Executor]] = None,
    executor: Optional[Executor] = None,
    worker_factory: Union[str, dict[str, str], None] = None,
    sweep_interval: float = 30.0,
) -> FastAPI:
    """Build the app serving every app of ``registry`` (default: the built-in
    apps). ``executors`` maps app ids to executors replacing their worker pools
    (tests pass ThreadExecutors); ``executor`` is a shorthand for the first
    app's; ``worker_factory`` ("module:function") replaces the engine the first
    app's worker processes build (a dict: by app id, for any app). With ``executor`` and no ``registry`` the
    server serves only the first built-in app: an embedding that supplies one
    executor gets one app, not extra worker processes it did not ask for."""
    settings = settings or Settings()
    if registry is None:
        registry = default_registry()
        if settings.apps:  # only the apps the settings name, in their order
            wanted = [a.strip() for a in settings.apps.split(",") if a.strip()]
            unknown = [a for a in wanted if registry.get(a) is None]
            if unknown:
                raise ValueError(f"apps: unknown app id {unknown[0]!r}; known: {', '.join(registry.ids())}")
            registry = Registry([registry[a] for a in wanted])
        elif executor is not None and not executors:
            registry = Registry([next(iter(registry))])
    if not settings.apps:
        registry = servable(registry, settings)
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(settings.resolved_database_url())
    # Inputs, results and uploads: a local directory or an S3 bucket. The
    # scratch dir only matters for S3 (bodies land there before the upload).
    storage = Storage.from_settings(settings)
    keyring = KeyRing.from_settings(settings)
    metrics = ServiceMetrics()
    apps = list(registry)
    executors = dict(executors or {})
    if executor is not None:
        executors.setdefault(apps[0].app_id, executor)
    factories = (dict(worker_factory) if isinstance(worker_factory, dict)
                 else {apps[0].app_id: worker_factory} if worker_factory else {})
    own = [a for a in apps if a.app_id not in executors]
    # With Ray, the apps built here share one cluster: each sizes its actors knowing the others'.
    peers = ray_demands(own, settings) if settings.executor == "ray" else []
    for app_ in own:
        executors[app_.app_id] = worker_pool(app_, settings, factories.get(app_.app_id), peers)
    scheduler = Scheduler(store, executors, ServiceEdges(settings, storage, registry), storage,
                          SchedulerConfig.from_settings(settings, sweep_interval=sweep_interval), hooks=metrics)
    metrics.bind(scheduler)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        # The database's threads (and other short blocking work): the loop's
        # default pool, sized here; blob calls have their own (Storage.pool).
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(settings.db_threads, thread_name_prefix="ccsr-db"))
        await asyncio.to_thread(store.create_all)
        try:  # servers sharing this database must share the blob store: refuse to start otherwise
            presence = await asyncio.to_thread(store_check.join, store.engine, storage.blobs, scheduler.node,
                                               settings.lease_seconds)
        except store_check.StoreMismatch as exc:
            app.state.startup_error = str(exc)
            log.error("%s", exc)
            store.close()
            raise
        app.state.store_presence = presence
        presence_task = asyncio.create_task(presence.run(settings.heartbeat_interval), name="ccsr-store-presence")
        weights_status.announce(app.state.weights_status)
        sender = await webhooks.start_for_app(app)
        scheduler.outbox = lambda session, view: webhooks.add_to_outbox(session, WebhookView(view))
        scheduler.on_outbox = sender.notify
        await scheduler.start()
        try:
            yield
        finally:
            await scheduler.stop()
            await webhooks.stop_for_app(app)
            presence_task.cancel()
            await asyncio.to_thread(presence.leave)
            store.close()
            storage.close()

    app = FastAPI(
        title="ccsr",
        summary="Self-hosted CCSR super-resolution speaking the fal-ai/ccsr queue protocol.",
        version=_version(),
        lifespan=lifespan,
        docs_url=None, redoc_url=None,  # served from the package by ccsr.service.docs_page (no CDN)
    )
    app.state.settings = settings
    app.state.keyring = keyring
    app.state.storage = storage
    app.state.blobs = storage.blobs
    app.state.files = storage.files
    app.state.store = store
    app.state.scheduler = scheduler
    app.state.registry = registry
    app.state.executors = executors
    app.state.executor = executors[apps[0].app_id]  # the first app's (tests reach its workers)
    app.state.metrics = metrics
    # Each served app's own: random or official, said in the log, /readyz, /api/apps and the playground.
    app.state.weights_status = weights_status.statuses(apps, settings)

    for app_ in apps:
        app.include_router(queue_router(QueueAPI(app_, scheduler, storage, settings)))

    @app.get("/api/apps", response_model=AppList, tags=["apps"], summary="The apps this server serves")
    async def app_list() -> AppList:
        return AppList(apps=[
            AppInfo(id=a.app_id, title=a.title, input_schema=a.Input.__name__, output_schema=a.Output.__name__,
                    queue_url=f"/queue/{a.app_id}", run_url=f"/{a.app_id}",
                    random_weights=getattr(app.state.weights_status.get(a.app_id), "random", None))
            for a in apps
        ])

    app.include_router(storage_router(storage.files, settings=settings, keyring=keyring), tags=["storage"])
    app.include_router(webhooks.jwks_router(settings=settings, keyring=keyring))
    app.include_router(proxy.proxy_router(settings=settings, keyring=keyring))

    @app.get("/healthz", tags=["health"], summary="The HTTP process is alive")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"],
             summary="Ready when every app has a worker holding its loaded model and the blob store answers")
    async def readyz(request: Request) -> Response:
        workers = ([{"app": app_id, **w} for app_id, ex in executors.items() for w in ex.describe()]
                   if ops_allowed(request) else "hidden: send an API key")  # PIDs, devices
        # A server whose blob store does not answer claims no work (ccsr.jobs.scheduler):
        # not ready, so a load balancer sends submits elsewhere.
        store_ok = storage.health.ok
        ready = all(ex.ready for ex in executors.values()) and scheduler.started and store_ok
        status = "ready" if ready else "loading" if store_ok else "store_unavailable"
        body = {"status": status, "store": storage.health.state(), "workers": workers,
                "queue_depth": scheduler.queue_depth(), "running": scheduler.running_count(),
                "random_weights": weights_status.random_weights(app.state.weights_status)}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics")
    async def metrics_route() -> Response:
        data, ctype = metrics.render()
        return Response(data, media_type=ctype)

    docs_page.mount(app)
    web.mount(app)  # the browser playground: / and /playground/*
    hardening.install(app, settings)  # body limit, strict JSON, JSON errors, private ops routes
    return app


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ccsr")
    except Exception:  # noqa: BLE001
        return "0"
