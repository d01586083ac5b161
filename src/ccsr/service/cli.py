"""``ccsr serve``: the HTTP service speaking the fal-ai/ccsr queue protocol."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

import typer

from ccsr.apps.registry import Registry


def serve(
    host: Optional[str] = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1; CCSR_HOST)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default 8000; CCSR_PORT)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Job database, files and webhook keys (CCSR_DATA_DIR)."),
    database_url: Optional[str] = typer.Option(None, "--database-url", help="sqlite:///... (default <data-dir>/ccsr.db) or postgresql://... (CCSR_DATABASE_URL)."),
    public_url: Optional[str] = typer.Option(None, "--public-url", help="Base URL clients reach the server at, for result and upload URLs (default: the request's Host)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N, mps or auto (CCSR_DEVICE)."),
    workers: Optional[str] = typer.Option(None, "--workers", help="Comma-separated devices, one model worker each, e.g. cuda:0,cuda:1 (CCSR_WORKERS)."),
    api_key: Optional[list[str]] = typer.Option(None, "--api-key", help="Accept this API key (repeatable; added to CCSR_API_KEYS and the keys file). Prefer the env var or a file: flags show in the process list."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="fp32, fp16, bf16 or auto (CCSR_DTYPE; auto = fp16 on CUDA/MPS, fp32 on CPU)."),
    allow_private_urls: Optional[bool] = typer.Option(None, "--allow-private-urls/--no-allow-private-urls", help="Let image_url and webhooks reach loopback/private addresses (CCSR_ALLOW_PRIVATE_URLS; for tests and private networks)."),
    api_keys_file: Optional[Path] = typer.Option(None, "--api-keys-file", help="File with one API key per line (CCSR_API_KEYS_FILE; CCSR_API_KEYS for a comma-separated list)."),
    executor: Optional[str] = typer.Option(None, "--executor", help="local (worker processes here) or ray (actors on a Ray cluster; CCSR_EXECUTOR). See docs/scale-out.md."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster for --executor ray: auto or the head's host:6379 (CCSR_RAY_ADDRESS; default: a private local Ray)."),
    ray_workers: Optional[int] = typer.Option(None, "--ray-workers", help="Actors of each app for --executor ray (default: the served apps split the cluster's GPUs, at least one each; a model's own count: CCSR_RAY_ACTORS, CCSR_ESRGAN_RAY_ACTORS; CCSR_RAY_WORKERS)."),
    ray_actor_options: Optional[str] = typer.Option(None, "--ray-actor-options", help='Ray actor options as JSON, e.g. \'{"num_gpus":0,"num_cpus":1}\' (CCSR_RAY_ACTOR_OPTIONS).'),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    engine_factory: Optional[str] = typer.Option(None, "--engine-factory", hidden=True, help="module:function building the engine in each worker (tests, benchmarks)."),
    **model_settings: Any,
) -> None:
    """Serve the fal-ai/ccsr API (queue, sync run, storage, webhooks) over HTTP.

    ``model_settings``: the models' settings flags (``--weights`` ...), by flat
    name, generated from the registry by :func:`register`."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from ccsr.service.app import create_app
    from ccsr.service.server import build_server
    from ccsr.service.auth import BindNotAllowed, KeyRing, check_bind_allowed
    from ccsr.settings import Settings

    overrides = {
        k: v
        for k, v in dict(
            host=host, port=port, data_dir=data_dir, database_url=database_url,
            public_url=public_url, device=device, workers=workers, api_keys_file=api_keys_file,
            dtype=dtype, allow_private_urls=allow_private_urls,
            executor=executor, ray_address=ray_address, ray_workers=ray_workers, **model_settings,
        ).items()
        if v is not None
    }
    if ray_actor_options is not None:
        try:
            overrides["ray_actor_options"] = json.loads(ray_actor_options)
        except ValueError as exc:
            typer.echo(f"error: --ray-actor-options: not valid JSON ({exc})", err=True)
            raise typer.Exit(2)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        typer.echo(f"error: {problems}", err=True)
        raise typer.Exit(2)
    except SettingsError as exc:  # e.g. CCSR_RAY_ACTOR_OPTIONS that is not JSON
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    if api_key:  # flags add to the keys from the environment, never replace them
        settings = settings.model_copy(update={"api_keys": [*settings.api_keys, *api_key]})
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keyring = KeyRing.from_settings(settings)
    try:
        check_bind_allowed(settings.host, keyring)
    except BindNotAllowed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    if not keyring.enabled:
        typer.echo(f"No API keys configured: open to anyone who can reach {settings.host} (loopback only).", err=True)
    factory = engine_factory or os.environ.get("CCSR_ENGINE_FACTORY") or None
    app = create_app(settings, worker_factory=factory)
    typer.echo(
        f"ccsr serve on http://{settings.host}:{settings.port} "
        f"(database {_redact(settings.resolved_database_url())}, data {settings.data_dir})",
        err=True,
    )
    try:
        build_server(app, settings, log_level=log_level, timeout_graceful_shutdown=10).run()
    except SystemExit:  # uvicorn's exit when the app's start failed
        problem = getattr(app.state, "startup_error", None)
        if problem:  # refused at start (ccsr.service.store_check): said last, after uvicorn's traceback
            typer.echo(f"error: {problem}", err=True)
            raise typer.Exit(1) from None
        raise


def _redact(url: str) -> str:
    """Hide a password in a database URL before printing it."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        if ":" in cred:
            return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"
    return url


def register(cli: typer.Typer, registry: Registry) -> None:
    """``ccsr serve`` with the shared flags above and each model's settings flags (``--weights``)."""
    from ccsr.commands.flags import parameters, setting_flags, with_signature

    own = [p for p in inspect.signature(serve, eval_str=True).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    flags = parameters(setting_flags({a.name: a.Settings for a in registry}), panel="Model settings")
    command = functools.wraps(serve)(lambda **kw: serve(**kw))
    cli.command("serve")(with_signature(command, [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + flags))
