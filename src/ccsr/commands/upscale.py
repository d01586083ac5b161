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

import functools
import glob
import inspect
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import typer

from ccsr.apps.base import App
from ccsr.apps.registry import Registry
from ccsr.commands.flags import (USAGE_ERROR, FieldFlag, FlagError, command, field_flags, flag_of, given_fields,
                                 parameters, setting_flags, validation_lines, with_signature)
from ccsr.errors import CCSRError, InvalidParameter
#: Suffixes taken as input images when a folder or a glob is given.
INPUT_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
#: Request fields that the command line names differently.
_FLAG_OF_FIELD = {"image_url": "INPUT", "max_output_pixels": "CCSR_MAX_OUTPUT_PIXELS"}
#: The command's own keywords (a model field of one of these names gets a prefixed flag).
OWN = ("inputs", "output", "model", "device", "dtype")


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


class _Models:
    """The models ``ccsr upscale`` can run, and the flags made from them."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.settings_flags: list[FieldFlag] = setting_flags({a.name: a.Settings for a in registry})
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
        plan = _plan(models, app, kw["inputs"], kw["output"], params, own, kw["device"], kw["dtype"])
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

    def __init__(self, inputs, outputs, status, device, dtype, torch_dtype, settings):
        self.inputs, self.outputs, self.status = inputs, outputs, status
        self.device, self.dtype, self.torch_dtype, self.settings = device, dtype, torch_dtype, settings


def _plan(models: _Models, app: App, inputs, output, params, own: dict, device, dtype) -> _Plan:
    """Every check that needs no model: inputs, output path and format, the
    app's request rules for each input's size, the device and dtype, the weights."""
    import warnings

    from ccsr.engine.device import SlowHalfPrecisionWarning, pick_device, pick_dtype
    from ccsr.settings import Settings

    # Flags win; otherwise the CCSR_* environment (one settings object for every entry point).
    settings = Settings(models={app.name: own})
    paths = expand_inputs(inputs)
    outputs = _output_paths(paths, output)
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
    return _Plan(paths, outputs, status, dev, dtype or settings.dtype, dt, settings)


def _save(produced: Any, dst: Path) -> None:
    """The app's encoded file as is when ``dst`` asks for its format, else re-encoded."""
    import io

    from PIL import Image

    from ccsr.engine.images import FORMATS, save_image

    if FORMATS.get(dst.suffix.lower()) == produced.content_type.split("/")[-1]:
        dst.write_bytes(produced.data)
        return
    with Image.open(io.BytesIO(produced.data)) as im:
        save_image(im.convert("RGB") if dst.suffix.lower() in (".jpg", ".jpeg") else im, dst)


def _run(app: App, plan: _Plan, params: Any) -> None:
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
        bar.update(load, description=f"model on {getattr(engine, 'device', plan.device)} ({dtype_name})", total=1, completed=1)

        def log(message: str, level: str = "INFO") -> None:
            if level != "INFO":
                bar.console.print(f"{level.lower()}: {message}", soft_wrap=True)

        for src, dst in zip(plan.inputs, plan.outputs):
            task = bar.add_task(src.name, total=None)

            def progress(step: int, total: int, task=task) -> None:
                bar.update(task, completed=step, total=total)

            produced = app.run(engine, _open_image(src), params, progress=progress, cancel=threading.Event(), log=log)
            _save(produced, dst)
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
