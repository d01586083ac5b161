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
    app()


if __name__ == "__main__":
    main()
