"""The `ccsr` command. Sub-commands live next to what they drive and register
themselves here, so this file stays an index; each model adds its own commands
(``ccsr esrgan ...``, ``ccsr weights random``) through ``App.register_cli``,
found through the registry, and the flags of ``upscale``, ``serve``, ``run``
and ``submit`` are made from the registered models."""

from __future__ import annotations

from typing import Optional

import typer

from ccsr.apps.registry import Registry, default_registry
from ccsr.client import cli as client_cli
from ccsr.commands import upscale, weights
from ccsr.service import cli as service_cli


def build(registry: Optional[Registry] = None) -> typer.Typer:
    """The `ccsr` command for ``registry`` (default: the built-in apps)."""
    registry = registry or default_registry()
    cli = typer.Typer(no_args_is_help=True, add_completion=False, help="CCSR super-resolution: upscale images, manage weights, run the service.")
    # Each module exposes register(cli, registry).
    for module in (upscale, weights, service_cli, client_cli):
        module.register(cli, registry)
    for model in registry:
        model.register_cli(cli)
    return cli


app = build()


def main() -> None:
    """The ``ccsr`` console script and ``python -m ccsr.cli``.

    After ``ccsr upscale`` has run a model, the process ends at once once its
    files are written (:func:`exit_now`): tearing down gigabytes of tensors
    and the thread pools took about 1.1 s on a 2-core VM, with nothing left to
    save. Every other command ends normally."""
    try:
        app()
    except SystemExit as exc:
        if upscale.model_ran():
            exit_now(exc.code)
        raise


def exit_now(code: object) -> None:
    """End the process with ``code`` (as ``sys.exit`` takes it) without the
    interpreter's teardown: output streams and logging are flushed first."""
    import logging
    import os
    import sys

    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    logging.shutdown()
    os._exit(code or 0)


if __name__ == "__main__":
    main()
