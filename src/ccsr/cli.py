"""The `ccsr` command. Sub-commands live next to what they drive and register
themselves here, so this file stays an index."""

from __future__ import annotations

import typer

from ccsr.client import cli as client_cli
from ccsr.commands import upscale, weights
from ccsr.models.esrgan import cli as esrgan
from ccsr.service import cli as service_cli

app = typer.Typer(no_args_is_help=True, add_completion=False, help="CCSR super-resolution: upscale images, manage weights, run the service.")

# Each module exposes register(app: typer.Typer).
for _module in (upscale, weights, esrgan, service_cli, client_cli):
    _module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
