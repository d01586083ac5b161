"""`ccsr upscale INPUT... -o OUT [--model NAME]`: a model on local files.

``--model`` picks the model by its name (default: the first registered, CCSR
v1); the run is the server's own: the app's checks, ``App.load_engine`` and
``App.run``. The flags are generated from the registered models (see
:mod:`ccsr.commands.flags`): one per request field of their ``Params``, named
after it (``t_max`` -> ``--t-max``), and their settings flags (``--weights``);
values are validated by the chosen model's own classes, so the CLI accepts
exactly what the API accepts, and a flag of another model is refused.

Everything that can be checked without the model is checked before it loads
(inputs, the output path and format, every cross-field rule and pixel limit,
device and dtype names): a mistake costs a second, not a whole run, exits
with the usage-error code 2 and names the flag, not the field.
"""

from __future__ import annotations

import enum
import functools
import glob
import inspect
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import typer

from ccsr.apps.base import App
from ccsr.apps.finish import run_one
from ccsr.apps.output import EXTENSIONS, OUTPUT_FORMATS, OutputSpec, default_format, format_for_file
from ccsr.apps.registry import Registry
from ccsr.commands.flags import (USAGE_ERROR, FieldFlag, FlagError, command, field_flags, flag_of, given_fields,
                                 parameters, setting_flags, validation_lines, with_signature)
from ccsr.errors import CCSRError, InvalidParameter
#: Suffixes taken as input images when a folder or a glob is given.
INPUT_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
#: Request fields that the command line names differently.
_FLAG_OF_FIELD = {"image_url": "INPUT", "max_output_pixels": "CCSR_MAX_OUTPUT_PIXELS"}
#: The command's own keywords (a model field of one of these names gets a prefixed flag).
OWN = ("inputs", "output", "output_format", "model", "device", "dtype")


_FormatChoice = enum.Enum("_FormatChoice", {f: f for f in OUTPUT_FORMATS}, type=str)  # type: ignore[misc]


class UsageError(CCSRError):
    """A mistake in the command line, found before any work; exits with code 2."""


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


def output_format(output: Optional[Path], flag: Optional[str], allowed: tuple[str, ...]) -> str:
    """The format of the results: ``--output-format``, else the extension of a
    ``-o`` file, else png (:func:`ccsr.apps.output.format_for_file`)."""
    suffix = output.suffix if output is not None and not output.is_dir() else ""
    try:
        return format_for_file(suffix, flag, allowed) or default_format(allowed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _output_paths(inputs: list[Path], output: Optional[Path], fmt: str = "png") -> list[Path]:
    """One input may go to a file; several go into a folder (created).

    A suffix names a file (its format checked by :func:`output_format`); a
    name without one (or an existing folder) is a folder, its files named
    after the inputs with ``fmt``'s extension. Checked before the model loads,
    so a bad -o never costs a whole run."""
    ext = EXTENSIONS[fmt]
    if output is None:
        return [p.with_name(f"{p.stem}_ccsr.{ext}") for p in inputs]
    if output.suffix and not output.is_dir():
        if len(inputs) > 1:
            raise UsageError(f"--output: {len(inputs)} inputs need a folder, not the file {output}")
        return [output]
    # Inputs from different folders may share a name: number the later ones
    # (a.png, a-2.png, ...) rather than overwrite an earlier result.
    taken: set[str] = set()
    paths = []
    for p in inputs:
        name, n = f"{p.stem}.{ext}", 1
        while name in taken:
            n += 1
            name = f"{p.stem}-{n}.{ext}"
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
    """The image as the server's workers see it (:mod:`ccsr.engine.normalize`:
    upright, 8-bit, its alpha, grey and ICC profile kept), or just its header;
    a CCSRError naming the file otherwise."""
    from PIL import Image

    from ccsr.engine.normalize import normalize_image

    try:
        with Image.open(path) as im:
            if header_only:
                return im
            im.seek(0)
            im.load()
            return normalize_image(im)
    except (OSError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        raise UsageError(f"{path}: not a readable image ({exc})") from None


class _Models:
    """The models ``ccsr upscale`` can run, and the flags made from them."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.settings_flags: list[FieldFlag] = setting_flags({a.name: a.Settings for a in registry}, by_field=True)
        own = (*OWN, *(f.param for f in self.settings_flags))
        self.param_flags: list[FieldFlag] = field_flags({a.name: a.Params for a in registry}, own)

    def app(self, name: Optional[str]) -> App:
        found = self.registry.by_name(name) if name else next(iter(self.registry))
        if found is None:
            raise UsageError(f"--model: unknown model {name!r}; choose one of {', '.join(self.registry.names())}")
        return found

    def flag(self, app: App, field: str) -> str:
        """The flag of a request field or setting of ``app`` (``t_min`` -> ``--t-min``)."""
        return (flag_of(self.param_flags, app.name, field) or flag_of(self.settings_flags, app.name, field)
                or _FLAG_OF_FIELD.get(field, "--" + field.replace("_", "-")))

    def parameters(self) -> list[inspect.Parameter]:
        kw = inspect.Parameter.KEYWORD_ONLY
        names = self.registry.names()
        return [
            inspect.Parameter("inputs", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=list[str], default=typer.Argument(
                ..., metavar="INPUT...", help="Image files, folders of images, or quoted globs ('photos/*.jpg').")),
            inspect.Parameter("output", kw, annotation=Optional[Path], default=typer.Option(
                None, "-o", "--output", help="Output file (.png, .jpg, .webp) for one input, or a folder for several. Default: <input>_ccsr.png.")),
            inspect.Parameter("output_format", kw, annotation=Optional[_FormatChoice], default=typer.Option(
                None, "--output-format", case_sensitive=False, show_default=False,
                help="png (lossless), jpeg (quality 95, 4:4:4) or webp (lossless). Default: from the --output file's extension, else png.")),
            inspect.Parameter("model", kw, annotation=Optional[str], default=typer.Option(
                None, "--model", help=f"The model to run: {', '.join(names)} (default {names[0]}). Its fields are the flags that belong to it.",
                show_default=False)),
            *parameters(self.param_flags),
            *parameters(self.settings_flags, panel="Model settings"),
            inspect.Parameter("device", kw, annotation=Optional[str], default=typer.Option(
                None, "--device", help="auto, cpu, cuda, cuda:N or mps (CCSR_DEVICE; default auto).")),
            inspect.Parameter("dtype", kw, annotation=Optional[str], default=typer.Option(
                None, "--dtype", help="auto, fp32, fp16 or bf16 (CCSR_DTYPE; default auto: never half precision on a CPU).")),
        ]


def upscale(models: _Models, **kw: Any) -> None:
    """Upscale image files with a model (default: CCSR v1) on this machine."""
    from pydantic import ValidationError

    try:
        app = models.app(kw["model"])
        choose = "choose its model with --model"
        params = app.Params(**given_fields(kw, models.param_flags, app.name, choose))
        own = given_fields(kw, models.settings_flags, app.name, choose)
    except FlagError as exc:
        for line in exc.lines:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(USAGE_ERROR)
    except ValidationError as exc:
        for line in validation_lines(exc, lambda f: models.flag(app, f)):
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(USAGE_ERROR)
    except UsageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(USAGE_ERROR)
    try:
        fmt = kw["output_format"].value if kw["output_format"] is not None else None
        plan = _plan(models, app, kw["inputs"], kw["output"], fmt, params, own, kw["device"], kw["dtype"])
        _run(app, plan, params)
    except UsageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(USAGE_ERROR)
    except InvalidParameter as exc:
        typer.echo(f"error: {models.flag(app, exc.field)}: {exc.message}", err=True)
        raise typer.Exit(USAGE_ERROR)
    except CCSRError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)


class _Plan:
    """What a run will do, fully checked before the model loads."""

    def __init__(self, inputs, outputs, output_spec, status, device, dtype, torch_dtype, settings):
        self.inputs, self.outputs, self.output_spec, self.status = inputs, outputs, output_spec, status
        self.device, self.dtype, self.torch_dtype, self.settings = device, dtype, torch_dtype, settings


def _plan(models: _Models, app: App, inputs, output, fmt, params, own: dict, device, dtype) -> _Plan:
    """Every check that needs no model: inputs, output path and format, the
    app's request rules for each input's size, the device and dtype, the weights."""
    import warnings

    from ccsr.engine.device import SlowHalfPrecisionWarning, pick_device, pick_dtype
    from ccsr.settings import Settings

    # Flags win; otherwise the CCSR_* environment (one settings object for every entry point).
    settings = Settings(models={app.name: own})
    paths = expand_inputs(inputs)
    spec = OutputSpec(output_format(output, fmt, app.output_formats), settings.provenance)
    outputs = _output_paths(paths, output, spec.format)
    app.check(params)  # the same rules the server applies, with no model behind them
    for src in paths:  # headers only
        im = _open_image(src, header_only=True)
        try:
            app.check_image(params, im.width, im.height, settings)
        except InvalidParameter as exc:
            raise UsageError(f"{models.flag(app, exc.field)}: {exc.message} (input {src}, {im.width}x{im.height})") from None
    try:
        dev = pick_device(device or settings.device)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", SlowHalfPrecisionWarning)
            dt = pick_dtype(dtype or settings.dtype, dev)
    except InvalidParameter as exc:
        raise UsageError(f"{models.flag(app, exc.field)}: {exc.message}") from None
    for w in seen:  # said once, here, in the CLI's words
        typer.echo(f"warning: {w.message}", err=True)
    check_writable(outputs)
    status = app.weights_status(settings.section(app))  # no weights: the error says what to run
    return _Plan(paths, outputs, spec, status, dev, dtype or settings.dtype, dt, settings)


#: Whether this process has loaded a model for ``ccsr upscale`` (the ``ccsr``
#: entry point then skips the interpreter's teardown: ccsr.cli.main).
_MODEL_RAN = False


def model_ran() -> bool:
    return _MODEL_RAN


def _run(app: App, plan: _Plan, params: Any) -> None:
    global _MODEL_RAN
    import sys
    import threading
    import warnings

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ccsr.engine.device import DTYPES, SlowHalfPrecisionWarning

    status = plan.status
    random = bool(status and status.random)
    if random:
        typer.echo(f"warning: {status.weights} holds RANDOM weights: the output shows the pipeline working, "
                   f"not a real upscale. {status.advice}", err=True)
    which = "RANDOM weights" if random else "weights"
    worker = {**app.worker_settings(plan.settings), "device": str(plan.device), "dtype": plan.dtype}
    dtype_name = next(k for k, v in DTYPES.items() if v == plan.torch_dtype)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False) as bar:
        load = bar.add_task("loading model", total=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SlowHalfPrecisionWarning)  # already said by _plan
            engine = app.load_engine(worker, str(plan.device))
        _MODEL_RAN = True
        bar.update(load, description=f"model on {getattr(engine, 'device', plan.device)} ({dtype_name})", total=1, completed=1)

        def log(message: str, level: str = "INFO") -> None:
            if level != "INFO":
                bar.console.print(f"{level.lower()}: {message}", soft_wrap=True)

        for src, dst in zip(plan.inputs, plan.outputs):
            task = bar.add_task(src.name, total=None)

            def progress(step: int, total: int, task=task) -> None:
                bar.update(task, completed=step, total=total)

            # The server's output stage: alpha, grey, ICC profile, format, provenance.
            produced = run_one(app, engine, _open_image(src), params, plan.output_spec, progress=progress,
                               cancel=threading.Event(), log=log)
            dst.write_bytes(produced.data)
            bar.update(task, description=src.name)
            f = produced.fields
            facts = [f"{f['width']}x{f['height']}" if "width" in f else "?",
                     *(f"{k}={v}" for k, v in f.items() if k not in ("width", "height")), which]
            bar.console.print(f"{src} -> {dst} ({', '.join(facts)})", soft_wrap=True)
    if random:
        typer.echo(f"done with RANDOM weights ({status.weights}): {len(plan.outputs)} file(s), not a real upscale", err=True)
    sys.stdout.flush()


def register(cli: typer.Typer, registry: Registry) -> None:
    models = _Models(registry)
    cli.command("upscale")(with_signature(command(functools.partial(upscale, models), "upscale", upscale.__doc__),
                                          models.parameters()))
