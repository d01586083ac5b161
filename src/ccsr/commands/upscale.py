"""`ccsr upscale INPUT... -o OUT`: the engine on local files.

One flag per request field of :class:`ccsr.models.ccsr_v1.params.UpscaleParams`, named
after it (``t_max`` -> ``--t-max``); values are validated by that same model,
so the CLI accepts exactly what the API accepts.

Everything that can be checked without the model is checked before it loads
(inputs, the output path and format, every cross-field rule and pixel limit,
device and dtype names): a mistake costs a second, not a whole run, exits
with the usage-error code 2 and names the flag, not the field.
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import List, Optional

import typer

from ccsr.errors import CCSRError, InvalidParameter
from ccsr.models.ccsr_v1.params import UpscaleParams

#: Exit code of a mistake in the command line (the same as click's own usage errors).
USAGE_ERROR = 2
#: Suffixes taken as input images when a folder or a glob is given.
INPUT_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
#: Request fields that the command line names differently.
_FLAG_OF_FIELD = {"image_url": "INPUT", "max_output_pixels": "CCSR_MAX_OUTPUT_PIXELS"}


class UsageError(CCSRError):
    """A mistake in the command line, found before any work; exits with code 2."""


def flag(field: str) -> str:
    """The command-line flag of a request field (``t_min`` -> ``--t-min``)."""
    return _FLAG_OF_FIELD.get(field, "--" + field.replace("_", "-"))


def expand_inputs(args: list[str]) -> list[Path]:
    """Files as given; a folder means the images in it; a quoted glob is expanded here."""
    found: list[Path] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES)
            if not images:
                raise UsageError(f"INPUT: folder {arg} holds no images ({', '.join(sorted(INPUT_SUFFIXES))})")
            found += images
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(arg):
            matches = sorted(Path(m) for m in glob.glob(arg) if Path(m).is_file())
            if not matches:
                raise UsageError(f"INPUT: no file matches {arg}")
            found += matches
        else:
            raise UsageError(f"INPUT: {arg} does not exist")
    return found


def _output_paths(inputs: list[Path], output: Optional[Path]) -> list[Path]:
    """One input may go to a file; several go into a folder (created).

    A suffix names a file and must be a format we write; a name without one
    (or an existing folder) is a folder. Checked before the model loads, so a
    bad -o never costs a whole run."""
    from ccsr.engine.images import FORMATS

    if output is None:
        return [p.with_name(f"{p.stem}_ccsr.png") for p in inputs]
    suffix = output.suffix.lower()
    if suffix and not output.is_dir():
        if suffix not in FORMATS:
            raise UsageError(
                f"--output: cannot write {suffix} files; use one of {', '.join(sorted(FORMATS))} "
                "(or a folder name without a suffix)"
            )
        if len(inputs) > 1:
            raise UsageError(f"--output: {len(inputs)} inputs need a folder, not the file {output}")
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


def check_writable(outputs: list[Path]) -> None:
    """Create the output folders and prove each can take a file (a probe file,
    removed at once: permission bits alone say nothing for root or on read-only mounts)."""
    for folder in sorted({p.parent for p in outputs}):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".ccsr-probe-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise UsageError(f"--output: cannot write into {folder} ({exc.strerror or exc})") from None
    for p in outputs:
        if p.is_dir():
            raise UsageError(f"--output: {p} is a folder, not a file")


def _open_image(path: Path, header_only: bool = False):
    """The image as RGB (or just its header), or a CCSRError naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im if header_only else im.convert("RGB")
    except (OSError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        raise UsageError(f"{path}: not a readable image ({exc})") from None


def upscale(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Image files, folders of images, or quoted globs ('photos/*.jpg')."),
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
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto, fp32, fp16 or bf16 (CCSR_DTYPE; default auto: never half precision on a CPU)."),
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
            typer.echo(f"error: {flag(str(err['loc'][0]))}: {err['msg']}", err=True)
        raise typer.Exit(USAGE_ERROR)
    try:
        plan = _plan(inputs, output, params, weights, device, dtype)
        _run(plan, params, config)
    except UsageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(USAGE_ERROR)
    except InvalidParameter as exc:
        typer.echo(f"error: {flag(exc.field)}: {exc.message}", err=True)
        raise typer.Exit(USAGE_ERROR)
    except CCSRError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)


class _Plan:
    """What a run will do, fully checked before the model loads."""

    def __init__(self, inputs, outputs, weights_path, random_weights, device, dtype, settings):
        self.inputs, self.outputs = inputs, outputs
        self.weights_path, self.random_weights = weights_path, random_weights
        self.device, self.dtype, self.settings = device, dtype, settings


def _plan(inputs, output, params, weights, device, dtype) -> _Plan:
    """Every check that needs no model: inputs, output path and format, the
    request rules for each input's size, the device and dtype, the weights file."""
    from ccsr.models.ccsr_v1 import weights as weights_mod
    from ccsr.engine.device import SlowHalfPrecisionWarning
    from ccsr.engine.device import pick_device, pick_dtype
    from ccsr.models.ccsr_v1.engine import CCSRUpscaler
    from ccsr.settings import Settings

    # Flags win; otherwise the CCSR_* environment (one settings object for every entry point).
    settings = Settings()
    paths = expand_inputs(inputs)
    outputs = _output_paths(paths, output)
    # The same rules the engine applies, with no model behind them (validate never touches it).
    checker = CCSRUpscaler(None, max_output_pixels=settings.max_output_pixels)
    for src in paths:  # headers only
        im = _open_image(src, header_only=True)
        try:
            checker.validate(params, im.width, im.height)
        except InvalidParameter as exc:
            raise UsageError(f"{flag(exc.field)}: {exc.message} (input {src}, {im.width}x{im.height})") from None
    try:
        dev = pick_device(device or settings.device)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", SlowHalfPrecisionWarning)
            dt = pick_dtype(dtype or settings.dtype, dev)
    except InvalidParameter as exc:
        raise UsageError(f"{flag(exc.field)}: {exc.message}") from None
    for w in seen:  # said once, here, in the CLI's words
        typer.echo(f"warning: {w.message}", err=True)
    check_writable(outputs)
    weights_path = weights_mod.resolve(weights or settings.weights)
    return _Plan(paths, outputs, weights_path, weights_mod.is_random(weights_path), str(dev), dt, settings)


def _run(plan: _Plan, params: UpscaleParams, config: Optional[Path]) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ccsr.engine.device import SlowHalfPrecisionWarning
    from ccsr.engine.images import save_image
    from ccsr.models.ccsr_v1.engine import CCSRUpscaler
    from ccsr.settings import channels_last_flag

    settings = plan.settings
    config = config or settings.config
    if plan.random_weights:
        typer.echo(
            f"warning: {plan.weights_path} holds RANDOM weights (written by `ccsr weights random`): "
            "the output shows the pipeline working, not a real upscale. `ccsr weights download` gets the official ones.",
            err=True,
        )
    which = "RANDOM weights" if plan.random_weights else "weights"
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False) as bar:
        load = bar.add_task("loading model", total=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SlowHalfPrecisionWarning)  # already said by _plan
            upscaler = CCSRUpscaler.from_checkpoint(
                plan.weights_path, config=config, device=plan.device, dtype=plan.dtype,
                tile_batch_size=settings.tile_batch_size, max_output_pixels=settings.max_output_pixels,
                auto_memory=settings.auto_memory, memory_budget=settings.memory_budget, compile=settings.compile,
                channels_last=channels_last_flag(settings.channels_last), tune_malloc=settings.tune_malloc,
            )
        bar.update(load, description=f"model on {upscaler.device} ({upscaler.dtype_name})", total=1, completed=1)
        for src, dst in zip(plan.inputs, plan.outputs):
            task = bar.add_task(src.name, total=None)

            def progress(step: int, total: int, task=task) -> None:
                bar.update(task, completed=step, total=total)

            image = _open_image(src)
            result = upscaler(image, params, progress=progress)
            save_image(result.image, dst)
            bar.update(task, description=src.name)
            bar.console.print(
                f"{src} -> {dst} ({result.image.width}x{result.image.height}, seed={result.seed}, {which})", soft_wrap=True
            )
    if plan.random_weights:
        typer.echo(f"done with RANDOM weights ({plan.weights_path}): {len(plan.outputs)} file(s), not a real upscale", err=True)
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("upscale")(upscale)
