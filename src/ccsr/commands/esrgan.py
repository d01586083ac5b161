"""`ccsr esrgan ...`: Real-ESRGAN models (list, upscale) and the download
behind `ccsr weights download --model NAME`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ccsr.errors import CCSRError

esrgan_app = typer.Typer(no_args_is_help=True, help="Real-ESRGAN: a fast GAN upscaler with real weights (the fal-ai/esrgan app's engine).")


def download_esrgan(model: str, dest_dir: Optional[Path] = None, force: bool = False, url: Optional[str] = None) -> Path:
    """Download with a progress bar; print the path, or the error and exit 1."""
    from ccsr import esrgan_weights

    try:
        path = esrgan_weights.download(model, dest_dir, force=force, url=url, progress=True)
    except CCSRError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    typer.echo(str(path))
    return path


@esrgan_app.command("models")
def models_cmd(weights_dir: Optional[Path] = typer.Option(None, "--dir", help="Weights directory (default ~/.cache/ccsr/esrgan).")) -> None:
    """List the models, their native scale and where their weights are found."""
    from ccsr import esrgan_weights
    from ccsr.model.esrgan import MODELS

    for name, spec in MODELS.items():
        src = esrgan_weights.find(name, weights_dir)
        where = src.describe() if src else f"not here: ccsr weights download --model {name}"
        typer.echo(f"{name:28s} x{spec.scale}  {where}")


def register(app: typer.Typer) -> None:
    app.add_typer(esrgan_app, name="esrgan")
