"""The FastAPI application of ``ccsr serve``.

:func:`create_app` wires the pieces: the job store (SQLite or PostgreSQL), the
file store, the scheduler with its executor (model worker processes by
default), and the routes: queue/run, storage, health, metrics, and the edges
(webhook keys, proxy) when present. This process never imports torch.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from ccsr.jobs.executor import Executor
from ccsr.jobs.scheduler import Scheduler
from ccsr.jobs.store import JobStore
from ccsr.service.auth import KeyRing
from ccsr.service.metrics import ServiceMetrics
from ccsr.service.routes_queue import QueueAPI, queue_router
from ccsr.service.runtime import ResultFiles, make_prepare
from ccsr.service.storage import FileStore, storage_router
from ccsr.settings import Settings

log = logging.getLogger("ccsr.service")

#: Settings a model worker needs (never the API keys).
WORKER_SETTINGS = ("weights", "config", "device", "dtype", "tile_batch_size", "max_output_pixels")


def worker_devices(settings: Settings) -> list[str]:
    if settings.workers:
        return [d.strip() for d in settings.workers.split(",") if d.strip()]
    return [settings.device]


def _optional(module: str) -> Optional[Any]:
    """Import an optional edge module; None only if that module itself is missing."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return None
        raise


def create_app(
    settings: Optional[Settings] = None,
    *,
    executor: Optional[Executor] = None,
    worker_factory: Optional[str] = None,
    sweep_interval: float = 30.0,
) -> FastAPI:
    """Build the app. ``executor`` replaces the worker pool (tests pass a
    ThreadExecutor); ``worker_factory`` ("module:function") replaces the engine
    the worker processes build."""
    settings = settings or Settings()
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(settings.resolved_database_url())
    files = FileStore(data_dir / "files")
    keyring = KeyRing.from_settings(settings)
    webhooks = _optional("ccsr.service.webhooks")
    metrics = ServiceMetrics()
    if executor is None:
        from ccsr.jobs.worker import DEFAULT_ENGINE_FACTORY

        wsettings = {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.model_dump().items() if k in WORKER_SETTINGS}
        if settings.executor == "ray":  # ray is imported only here
            from ccsr.jobs.ray_executor import RayExecutor

            executor = RayExecutor(wsettings, address=settings.ray_address, workers=settings.ray_workers,
                                   actor_options=settings.ray_actor_options,
                                   factory=worker_factory or DEFAULT_ENGINE_FACTORY)
        else:
            from ccsr.jobs.pool import WorkerPool

            executor = WorkerPool(wsettings, worker_devices(settings), factory=worker_factory or DEFAULT_ENGINE_FACTORY)
    scheduler = Scheduler(
        store,
        executor,
        ResultFiles(files),
        prepare_input=make_prepare(settings, files),
        work_dir=str(data_dir / "work"),
        result_ttl=settings.result_ttl,
        max_attempts=settings.max_attempts,
        max_output_pixels=settings.max_output_pixels,
        hooks=metrics,
        sweep_interval=sweep_interval,
    )
    metrics.bind(scheduler)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        import asyncio

        await asyncio.to_thread(store.create_all)
        if webhooks is not None:
            sender = await webhooks.start_for_app(app)
            scheduler.outbox = webhooks.add_to_outbox
            scheduler.on_outbox = sender.notify
        await scheduler.start()
        try:
            yield
        finally:
            await scheduler.stop()
            if webhooks is not None:
                await webhooks.stop_for_app(app)
            store.close()

    app = FastAPI(
        title="ccsr",
        summary="Self-hosted CCSR super-resolution speaking the fal-ai/ccsr queue protocol.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.keyring = keyring
    app.state.files = files
    app.state.store = store
    app.state.scheduler = scheduler
    app.state.executor = executor
    app.state.metrics = metrics

    app.include_router(queue_router(QueueAPI(scheduler, settings)))
    app.include_router(storage_router(files, settings=settings, keyring=keyring), tags=["storage"])
    for name, attr in (("ccsr.service.webhooks", "jwks_router"), ("ccsr.service.proxy", "proxy_router")):
        mod = _optional(name)
        if mod is not None and hasattr(mod, attr):
            app.include_router(getattr(mod, attr)(settings=settings, keyring=keyring))

    @app.get("/healthz", tags=["health"], summary="The HTTP process is alive")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Ready when a worker holds the loaded model")
    async def readyz() -> Response:
        workers = executor.describe()
        ready = executor.ready and scheduler.started
        body = {"status": "ready" if ready else "loading", "workers": workers,
                "queue_depth": scheduler.queue_depth(), "running": scheduler.running_count()}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics")
    async def metrics_route() -> Response:
        data, ctype = metrics.render()
        return Response(data, media_type=ctype)

    _optional("ccsr.web").mount(app)  # the browser playground: / and /playground/*
    return app


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ccsr")
    except Exception:  # noqa: BLE001
        return "0"
