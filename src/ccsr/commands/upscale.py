"""`ccsr upscale INPUT... -o OUT`: the engine on local files.

One flag per request field of :class:`ccsr.params.UpscaleParams`, named
after it (``t_max`` -> ``--t-max``); values are validated by that same model,
so the CLI accepts exactly what the API accepts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from ccsr.errors import CCSRError
from ccsr.params import UpscaleParams

#: Image suffixes that name an output file rather than a folder; only FORMATS can be written.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def _output_paths(inputs: list[Path], output: Optional[Path]) -> list[Path]:
    """One input may go to a file; several go into a folder (created).

    Checked before the model loads, so a bad -o never costs a whole run."""
    from ccsr.pipeline.preprocess import FORMATS

    if output is None:
        return [p.with_name(f"{p.stem}_ccsr.png") for p in inputs]
    suffix = output.suffix.lower()
    if len(inputs) == 1 and suffix in IMAGE_SUFFIXES:
        if suffix not in FORMATS:
            raise CCSRError(f"--output: cannot write {suffix} files; use one of {', '.join(sorted(FORMATS))}")
        return [output]
    # Inputs from different folders may share a name: number the later ones
    # (a.png, a-2.png, ...) rather than overwrite an earlier result.
    taken: set[str] = set()
    paths = []
    for p in inputs:
        name, n = f"{p.stem}.png", 1
        while name in taken:
            n += 1
            name = f"{p.stem}-{n}.png"
        taken.add(name)
        paths.append(output / name)
    return paths


def _open_image(path: Path, header_only: bool = False):
    """The image as RGB (or just its header), or a CCSRError naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im if header_only else im.convert("RGB")
    except (OSError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        raise CCSRError(f"{path}: not a readable image ({exc})") from None


def upscale(
    inputs: List[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Input image file(s)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output file (.png, .jpg, .webp) for one input, or a folder for several. Default: <input>_ccsr.png."),
    scale: float = typer.Option(2.0, help="Output scale factor."),
    steps: int = typer.Option(50, help="Diffusion steps (the truncated sampler evaluates about a third of them)."),
    t_max: float = typer.Option(0.6667, "--t-max", help="Upper end of the sampled t range."),
    t_min: float = typer.Option(0.3333, "--t-min", help="Lower end of the sampled t range."),
    tile_diffusion: str = typer.Option("none", "--tile-diffusion", help="none, mix or gaussian."),
    tile_diffusion_size: int = typer.Option(1024, "--tile-diffusion-size", help="Diffusion tile size in pixels."),
    tile_diffusion_stride: int = typer.Option(512, "--tile-diffusion-stride", help="Diffusion tile stride in pixels."),
    tile_vae: bool = typer.Option(False, "--tile-vae/--no-tile-vae", help="Tile the VAE encoder and decoder."),
    tile_vae_decoder_size: int = typer.Option(226, "--tile-vae-decoder-size", help="VAE decoder tile size (latent pixels)."),
    tile_vae_encoder_size: int = typer.Option(1024, "--tile-vae-encoder-size", help="VAE encoder tile size (pixels)."),
    color_fix_type: str = typer.Option("adain", "--color-fix-type", help="none, adain or wavelet."),
    seed: Optional[int] = typer.Option(None, help="Seed (random when absent; always printed)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Checkpoint file (CCSR_WEIGHTS); default: the cached official weights."),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help="Official-format model YAML (CCSR_CONFIG); default: inferred from the checkpoint."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps (CCSR_DEVICE; default auto)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto, fp32, fp16 or bf16 (CCSR_DTYPE; default auto)."),
) -> None:
    """Upscale image files with CCSR."""
    from pydantic import ValidationError

    try:
        params = UpscaleParams(
            scale=scale, steps=steps, t_max=t_max, t_min=t_min, tile_diffusion=tile_diffusion,
            tile_diffusion_size=tile_diffusion_size, tile_diffusion_stride=tile_diffusion_stride,
            tile_vae=tile_vae, tile_vae_decoder_size=tile_vae_decoder_size,
            tile_vae_encoder_size=tile_vae_encoder_size, color_fix_type=color_fix_type, seed=seed,
        )
    except ValidationError as exc:
        for err in exc.errors():
            field = "--" + str(err["loc"][0]).replace("_", "-")
            typer.echo(f"error: {field}: {err['msg']}", err=True)
        raise typer.Exit(2)
    try:
        outputs = _output_paths(inputs, output)
        for src in inputs:  # headers only: fail before the model loads
            _open_image(src, header_only=True)
        _run(inputs, outputs, params, weights, config, device, dtype)
    except CCSRError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)


def _run(inputs, outputs, params, weights, config, device, dtype) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ccsr.pipeline.preprocess import save_image
    from ccsr.pipeline.upscaler import CCSRUpscaler
    from ccsr.settings import Settings

    # Flags win; otherwise the CCSR_* environment (one settings object for every entry point).
    settings = Settings()
    weights = weights or settings.weights
    config = config or settings.config

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False) as bar:
        load = bar.add_task("loading model", total=None)
        upscaler = CCSRUpscaler.from_checkpoint(
            weights, config=config, device=device or settings.device, dtype=dtype or settings.dtype,
            tile_batch_size=settings.tile_batch_size, max_output_pixels=settings.max_output_pixels,
        )
        bar.update(load, description=f"model on {upscaler.device} ({upscaler.dtype_name})", total=1, completed=1)
        for src, dst in zip(inputs, outputs):
            task = bar.add_task(src.name, total=None)

            def progress(step: int, total: int, task=task) -> None:
                bar.update(task, completed=step, total=total)

            image = _open_image(src)
            result = upscaler(image, params, progress=progress)
            dst.parent.mkdir(parents=True, exist_ok=True)
            save_image(result.image, dst)
            bar.update(task, description=src.name)
            bar.console.print(f"{src} -> {dst} ({result.image.width}x{result.image.height}, seed={result.seed})", soft_wrap=True)
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("upscale")(upscale)
