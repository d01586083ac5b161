"""The `ccsr` command. Sub-commands live next to what they drive and register
themselves here, so this file stays an index."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="CCSR super-resolution: upscale images, manage weights, run the service.")

# Each module exposes register(app: typer.Typer). Missing optional pieces are skipped.
_COMMAND_MODULES = (
    "ccsr.commands.upscale",
    "ccsr.commands.weights",
    "ccsr.commands.esrgan",
    "ccsr.service.cli",
    "ccsr.client.cli",
)

for _name in _COMMAND_MODULES:
    try:
        _mod = importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # a piece not built yet; never hide other errors
        if exc.name and _name.startswith(exc.name):
            continue
        raise
    _mod.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
